"""Benchmark: the speech judges, lenient (the original recipe) against robust.

Both sets of judges -- a digit and a speaker classifier each, trained on the run's real
training audio by ``vqvae evaluate``'s own path (:func:`speech_judges`, cached in the
run's ``classifiers/`` and ``classifiers/lenient/``) -- score:

1. **Real held-out clips** (FSDD validation takes 5-9, 300 clips): clean, and under each
   perturbation alone: speed ×0.85 and ×1.15 (tempo and pitch), pitch ×0.85 and ×1.15 at
   constant tempo, tempo ×0.85 and ×1.15 at constant pitch, 0.3 s of silence at both ends,
   a low-pass at 2 kHz, white noise at 20 dB SNR. A judge of words should hear the digit
   through all of them; a speaker judge is *meant* to change its mind under a pitch or
   speed change (that changes the voice), but not under the others.
2. **The model's outputs**: ``vqvae evaluate``'s reconstructions and conversions of the
   same held-out clips (the decoder is deterministic, so both sets judge the same audio);
   then, on conversions decoded once here, the digit accuracy by source and by target
   speaker and how often the two digit judges agree.
3. **An unseen voice**: a lenient and a robust digit judge trained without one speaker
   (``--unseen-speaker``, default george; cached in ``classifiers/without-NAME/``), scored
   on all 450 of that speaker's clips (both splits) and on the others' held-out clips.
   A judge of words should still hear them; one that learnt voices should not.

The run is the exact 15-minute command (``vqvae train --data fsdd --data-dir
../shared/data/fsdd --time-budget 15 --seed 0``), trained once elsewhere and copied
here (``--source`` → ``--run``: its config, weights and metrics; the copy is where the
judges are cached). Nothing is retrained but the judges, once per set; a rerun reuses them.

    python benchmarks/speech_judges.py [--source runs/retrieval/fsdd] [--run runs/judges/fsdd]

Writes benchmarks/results/speech_judges.json and prints the tables.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from common import machine_info, write_json_atomic
from vqvae.modalities.speech.augment import (
    change_speed,
    change_tempo,
    lowpass,
    pad_silence,
    shift_pitch,
)
from vqvae.modalities.speech.evaluation import JUDGES, evaluate_speech_run, speech_judges
from vqvae.modalities.speech.judge import audio_accuracy, cached_audio_classifier, predict_audio
from vqvae.modalities.speech.run import (
    decode_clips,
    encode_clips,
    load_speech,
    run_speakers,
    speech_data,
)

ROOT = Path(__file__).resolve().parents[1]
RUN_FILES = ("config.json", "model.safetensors", "metrics.jsonl")
OUTPUT_FIGURES = ("real_digit_accuracy", "real_speaker_accuracy", "reconstruction_digit_accuracy",
                  "reconstruction_speaker_accuracy", "conversion_speaker_accuracy",
                  "conversion_source_speaker_rate", "conversion_digit_accuracy")


def copy_run(source: Path, run: Path) -> None:
    """Copy the files a judged run needs; an existing copy must hold the same weights."""
    if (run / "model.safetensors").exists():
        if not filecmp.cmp(source / "model.safetensors", run / "model.safetensors", shallow=False):
            raise SystemExit(f"{run} holds another model than {source}: delete it or pass another --run")
        return
    missing = [name for name in RUN_FILES if not (source / name).is_file()]
    if missing:
        raise SystemExit(f"{source} is not a trained speech run: it lacks {', '.join(missing)}")
    run.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        shutil.copy2(source / name, run / name)


def perturbations(rate: int, seed: int) -> dict[str, Callable[[Tensor], Tensor]]:
    """Each held-out perturbation: one clip ``(T,)`` -> the perturbed clip."""
    generator = torch.Generator().manual_seed(seed)
    pad = round(0.3 * rate)

    def noise(clip: Tensor) -> Tensor:  # white noise 20 dB under the clip's power
        return clip + torch.randn(clip.shape, generator=generator) * clip.square().mean().sqrt() * 0.1

    return {
        "clean": lambda clip: clip,
        "speed x0.85": lambda clip: change_speed(clip, 0.85),
        "speed x1.15": lambda clip: change_speed(clip, 1.15),
        "pitch x0.85": lambda clip: shift_pitch(clip, 0.85),
        "pitch x1.15": lambda clip: shift_pitch(clip, 1.15),
        "tempo x0.85": lambda clip: change_tempo(clip, 0.85),
        "tempo x1.15": lambda clip: change_tempo(clip, 1.15),
        "silence 0.3 s at both ends": lambda clip: pad_silence(clip, pad, pad),
        "low-pass 2 kHz": lambda clip: lowpass(clip[None], torch.tensor([2000.0]), rate)[0],
        "noise 20 dB SNR": noise,
    }


def robustness(run: Path, steps: int, seed: int) -> tuple[dict, dict]:
    """Accuracy of each judge on the real held-out clips, clean and perturbed; and how
    each judge was trained."""
    train, held_out = speech_data(run, split="train", default_split="train"), speech_data(run)
    truth = {"digit": held_out.labels, "speaker": run_speakers(run, held_out)}
    scores, trained = {}, {}
    for judges in JUDGES:
        start = time.monotonic()
        models = dict(zip(("digit", "speaker"), speech_judges(run, train, judges, steps, seed), strict=True))
        trained[judges] = {"seconds_to_train_or_load": round(time.monotonic() - start, 1),
                           **{name: model.train_settings for name, model in models.items()}}
        scores[judges] = {name: {} for name in models}
        for change, fn in perturbations(held_out.sample_rate, seed).items():
            clips = [fn(clip) for clip in held_out.waveforms]
            for name, model in models.items():
                scores[judges][name][change] = audio_accuracy(model, clips, truth[name])
    return scores, trained


def breakdown(run: Path, steps: int, seed: int) -> dict:
    """Conversions of every held-out clip to every other speaker, judged by both sets:
    digit kept and target speaker heard, by source and by target speaker; agreement."""
    train, held_out = speech_data(run, split="train", default_split="train"), speech_data(run)
    names = read_speakers(run)
    model = load_speech(run)
    clips = list(held_out.waveforms)
    speakers = run_speakers(run, held_out)
    codes = encode_clips(model, clips)
    pairs = [(i, t) for i in range(len(clips)) for t in range(len(names)) if t != int(speakers[i])]
    source = torch.tensor([i for i, _ in pairs])
    target = torch.tensor([t for _, t in pairs])
    converted = decode_clips(model, [codes[i] for i in source], target, [clips[i].numel() for i in source])
    digits, source_speakers = held_out.labels[source], speakers[source]
    out: dict = {"conversions": len(pairs)}
    predicted = {}
    for judges in JUDGES:
        digit, speaker = speech_judges(run, train, judges, steps, seed)
        predicted[judges] = predict_audio(digit, converted)
        kept = (predicted[judges] == digits).double()
        heard = (predict_audio(speaker, converted) == target).double()
        out[judges] = {
            "digit_kept_by_source": {n: float(kept[source_speakers == s].mean()) for s, n in enumerate(names)},
            "digit_kept_by_target": {n: float(kept[target == s].mean()) for s, n in enumerate(names)},
            "target_heard_by_target": {n: float(heard[target == s].mean()) for s, n in enumerate(names)},
        }
    lenient, robust = (predicted[j] == digits for j in ("lenient", "robust"))
    out["digit_judges_agree"] = float((predicted["lenient"] == predicted["robust"]).double().mean())
    out["kept_by_lenient_only"] = float((lenient & ~robust).double().mean())
    out["kept_by_robust_only"] = float((robust & ~lenient).double().mean())
    return out


def unseen_speaker(run: Path, name: str, steps: int, seed: int) -> dict:
    """Digit judges of both recipes trained without speaker ``name``, scored on that
    speaker's clips (never heard) and on the other speakers' held-out clips."""
    names = read_speakers(run)
    if name not in names:
        raise SystemExit(f"--unseen-speaker {name!r} is not one of the run's speakers: {', '.join(names)}")
    train, held_out = speech_data(run, split="train", default_split="train"), speech_data(run)
    who, held_who = run_speakers(run, train), run_speakers(run, held_out)
    unseen = names.index(name)
    keep = (who != unseen).nonzero()[:, 0].tolist()
    voice = [train.waveforms[i] for i in (who == unseen).nonzero()[:, 0].tolist()]
    voice += [held_out.waveforms[i] for i in (held_who == unseen).nonzero()[:, 0].tolist()]
    voice_labels = torch.cat([train.labels[who == unseen], held_out.labels[held_who == unseen]])
    others = (held_who != unseen).nonzero()[:, 0].tolist()
    out: dict = {"speaker": name, "train_clips": len(keep), "unseen_clips": len(voice)}
    for judges in JUDGES:
        recipe = JUDGES[judges][0]
        model, _ = cached_audio_classifier(
            run / "classifiers" / f"without-{name}" / judges, [train.waveforms[i] for i in keep],
            train.labels[keep], len(train.classes), sample_rate=train.sample_rate, steps=steps, seed=seed,
            recipe=recipe)
        out[judges] = {
            "unseen_speaker_digit_accuracy": audio_accuracy(model, voice, voice_labels),
            "other_speakers_held_out_digit_accuracy": audio_accuracy(
                model, [held_out.waveforms[i] for i in others], held_out.labels[others]),
        }
    return out


def read_speakers(run: Path) -> list[str]:
    return json.loads((run / "config.json").read_text())["data"]["speakers"]


def table(scores: dict, outputs: dict) -> str:
    lines = ["| held-out clips | " + " | ".join(f"{j} {n}" for j in scores for n in scores[j]) + " |",
             "|---|" + "--:|" * sum(len(v) for v in scores.values())]
    for change in next(iter(next(iter(scores.values())).values())):
        cells = [f"{scores[j][n][change]:.1%}" for j in scores for n in scores[j]]
        lines.append(f"| {change} | " + " | ".join(cells) + " |")
    lines += ["", "| model outputs | " + " | ".join(outputs) + " |", "|---|" + "--:|" * len(outputs)]
    for figure in OUTPUT_FIGURES:
        lines.append(f"| {figure} | " + " | ".join(f"{outputs[j][figure]:.1%}" for j in outputs) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=ROOT / "runs" / "retrieval" / "fsdd",
                        help="the trained run of the 15-minute command (read only)")
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "judges" / "fsdd",
                        help="where the run is copied and its judges cached")
    parser.add_argument("--classifier-steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unseen-speaker", default="george", help="the speaker left out of part 3")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (judges are seeded per thread count)")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "speech_judges.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    load = {"start": os.getloadavg()[0]}
    copy_run(args.source, args.run)
    scores, trained = robustness(args.run, args.classifier_steps, args.seed)
    outputs = {judges: evaluate_speech_run(args.run, classifier_steps=args.classifier_steps, seed=args.seed,
                                           judges=judges) for judges in JUDGES}
    conversions = breakdown(args.run, args.classifier_steps, args.seed)
    unseen = unseen_speaker(args.run, args.unseen_speaker, args.classifier_steps, args.seed)
    load["end"] = os.getloadavg()[0]
    metrics = [json.loads(line) for line in (args.run / "metrics.jsonl").read_text().splitlines()]
    result = {
        "command": "python benchmarks/speech_judges.py",
        "run": {"source": str(args.source), "train_command": "vqvae train --data fsdd --data-dir "
                "../shared/data/fsdd --time-budget 15 --seed 0", "steps": max(m["step"] for m in metrics)},
        "held_out": "FSDD validation takes 5-9, 300 clips (the shared copy has no test takes 0-4)",
        "judges": {name: {"digit_recipe": d, "speaker_recipe": s, "folder": f}
                   for name, (d, s, f) in JUDGES.items()},
        "training": trained,
        "robustness": scores,
        "outputs": {j: {k: v for k, v in m.items() if k in OUTPUT_FIGURES or k == "conversions"}
                    for j, m in outputs.items()},
        "conversions": conversions,
        "unseen_speaker": unseen,
        "machine": machine_info(load),
    }
    write_json_atomic(result, args.results)
    print(table(scores, outputs))
    print(json.dumps({"conversions": conversions, "unseen_speaker": unseen}, indent=1))


if __name__ == "__main__":
    main()
