"""Reader for RAVDESS (Livingstone & Russo 2018) audio: ``Actor_NN/MM-VV-EE-II-SS-RR-AA.wav``.

The seven two-digit fields of a file name:

====  ==================  ==========================================================
MM    modality            01 full-AV, 02 video-only, 03 audio-only
VV    vocal channel       01 speech, 02 song
EE    emotion             01 neutral … 08 surprised (:data:`EMOTIONS`)
II    intensity           01 normal, 02 strong (neutral has only normal)
SS    statement           01 "Kids are talking by the door", 02 "Dogs are sitting by the door"
RR    repetition          01, 02
AA    actor               01–24; odd = male, even = female
====  ==================  ==========================================================

Classes are the emotions of the chosen channel: 8 for ``speech`` and ``both``; 6 for ``song``
(song has no disgust or surprised, and a classifier should not carry classes it never sees).

Folds are by actor, so no voice is in both train and test: actors are paired (1, 2), (3, 4), …
and the pairs dealt round-robin over the folds. The default 4 folds hold 6 actors each, 3 male
and 3 female (fold 1: actors 1, 2, 9, 10, 17, 18); 6 folds hold 4 actors, 2 of each.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from panns_lightning.shardset.folds import FoldedDataset, group_folds, label_entries
from panns_lightning.shardset.records import ClipRecord, ReaderResult, SkippedClip

EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
SONG_EMOTIONS = EMOTIONS[:6]
MODALITIES = {1: "full-AV", 2: "video-only", 3: "audio-only"}
CHANNELS = {1: "speech", 2: "song"}
INTENSITIES = {1: "normal", 2: "strong"}
STATEMENTS = {1: "Kids are talking by the door", 2: "Dogs are sitting by the door"}
NUM_ACTORS = 24
DEFAULT_NUM_FOLDS = 4
_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
_ACTOR_DIR = re.compile(r"^Actor_(\d{2})$")


def actor_fold(actor: int, num_folds: int) -> int:
    """Fold 1..k of an actor: pairs (1, 2), (3, 4), … dealt round-robin, so folds mix genders evenly."""
    if not 1 <= actor <= NUM_ACTORS:
        raise ValueError(f"actor {actor} outside 1..{NUM_ACTORS}")
    return (actor - 1) // 2 % num_folds + 1


def read_ravdess(
    root: str | os.PathLike, *, channel: str = "speech", num_folds: int = DEFAULT_NUM_FOLDS
) -> FoldedDataset:
    """Records for every ``Actor_NN/*.wav`` of ``channel`` ("speech", "song" or "both"), folds by actor."""
    if channel not in ("speech", "song", "both"):
        raise ValueError(f"channel must be 'speech', 'song' or 'both', got {channel!r}")
    if not 2 <= num_folds <= NUM_ACTORS // 2:
        raise ValueError(
            f"num_folds must be in 2..{NUM_ACTORS // 2} (folds are dealt pairs of actors), got {num_folds}"
        )
    root = Path(root)
    actor_dirs = (
        sorted(p for p in root.rglob("Actor_*") if p.is_dir() and _ACTOR_DIR.match(p.name)) if root.is_dir() else []
    )
    if not actor_dirs:
        raise FileNotFoundError(
            f"{root}: no Actor_NN folders found (expected {root}/Actor_01/03-01-01-01-01-01-01.wav, ...)"
        )

    emotions = SONG_EMOTIONS if channel == "song" else EMOTIONS
    wanted_channels = {"speech": {1}, "song": {2}, "both": {1, 2}}[channel]
    result = ReaderResult()
    seen: dict[str, Path] = {}
    actors: dict[str, int] = {}
    metas: dict[str, tuple[Path, dict]] = {}
    for actor_dir in actor_dirs:
        folder_actor = int(_ACTOR_DIR.match(actor_dir.name)[1])  # type: ignore[index]
        for path in sorted(actor_dir.glob("*.wav")):
            source = path.relative_to(root).as_posix()
            match = _NAME.match(path.stem)
            if match is None:
                result.skipped.append(SkippedClip(path.stem, source, "name is not MM-VV-EE-II-SS-RR-AA.wav"))
                continue
            modality, vocal, emotion, intensity, statement, repetition, actor = (int(x) for x in match.groups())
            problem = _field_problem(modality, vocal, emotion, intensity, statement, repetition, actor, folder_actor)
            if problem is None and vocal not in wanted_channels:
                continue  # the other channel: not asked for, not an error
            if problem is None and vocal == 2 and emotion > len(SONG_EMOTIONS):
                problem = f"emotion {emotion:02d} ({EMOTIONS[emotion - 1]}) does not occur in RAVDESS song"
            if problem is not None:
                result.skipped.append(SkippedClip(path.stem, source, problem))
                continue
            if path.stem in seen:
                result.skipped.append(
                    SkippedClip(path.stem, source, f"duplicate of {seen[path.stem].relative_to(root).as_posix()}")
                )
                continue
            seen[path.stem] = path
            actors[path.stem] = actor
            metas[path.stem] = (
                path,
                {
                    "modality": MODALITIES[modality],
                    "vocal_channel": CHANNELS[vocal],
                    "emotion": EMOTIONS[emotion - 1],
                    "intensity": INTENSITIES[intensity],
                    "statement": statement,
                    "repetition": repetition,
                    "actor": actor,
                    "gender": "male" if actor % 2 else "female",
                    "_label": emotion - 1,
                },
            )

    folds = group_folds(actors, {a: actor_fold(a, num_folds) for a in set(actors.values())})
    for stem, (path, meta) in sorted(metas.items()):
        label = meta.pop("_label")
        result.records.append(
            ClipRecord(
                key=stem,
                audio_path=path,
                labels=(label,),
                meta={"fold": folds[stem], **meta},
                source=path.relative_to(root).as_posix(),
            )
        )
    if NUM_ACTORS // 2 % num_folds:
        result.warnings.append(
            f"{NUM_ACTORS // 2} actor pairs do not divide into {num_folds} folds evenly: fold sizes differ"
        )
    return FoldedDataset(
        dataset="ravdess",
        result=result,
        labels=label_entries(list(emotions)),
        scheme="by_actor",
        num_folds=num_folds,
        seed=None,
        description=(
            f"{num_folds} folds by actor: pairs (1,2), (3,4), ... dealt round-robin, so each fold has as many "
            "male as female actors and no actor is in two folds"
        ),
        extra={
            "source_layout": "RAVDESS (Actor_NN/MM-VV-EE-II-SS-RR-AA.wav)",
            "channel": channel,
            "actor_folds": {str(a): actor_fold(a, num_folds) for a in range(1, NUM_ACTORS + 1)},
        },
    )


def _field_problem(
    modality: int,
    vocal: int,
    emotion: int,
    intensity: int,
    statement: int,
    repetition: int,
    actor: int,
    folder_actor: int,
) -> str | None:
    if modality not in MODALITIES:
        return f"modality {modality:02d} is not 01, 02 or 03"
    if modality == 2:
        return "video-only recording (modality 02) has no audio"
    if vocal not in CHANNELS:
        return f"vocal channel {vocal:02d} is not 01 (speech) or 02 (song)"
    if not 1 <= emotion <= len(EMOTIONS):
        return f"emotion {emotion:02d} outside 01..08"
    if intensity not in INTENSITIES:
        return f"intensity {intensity:02d} is not 01 or 02"
    if statement not in STATEMENTS or repetition not in (1, 2):
        return f"statement {statement:02d} / repetition {repetition:02d} not in 01..02"
    if not 1 <= actor <= NUM_ACTORS:
        return f"actor {actor:02d} outside 01..{NUM_ACTORS}"
    if actor != folder_actor:
        return f"actor {actor:02d} in the name but the file is in Actor_{folder_actor:02d}"
    return None
