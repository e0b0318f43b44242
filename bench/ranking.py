"""The ranker's speed and memory: inference ms/pair and peak memory at batch 32, and an epoch with the backbone's
features computed once per image (cached) against once per pair (uncached).

    .venv/bin/python bench/ranking.py [--backbone small] [--image-size 224] [--batch 32] [--pairs 512] [--json F]
    python3 bench/ranking.py --backbone large --image-size 768          # on a GPU: the seed's model and input

The seed's targets (on a GPU): < 100 ms/pair, < 12 GB at batch 32. The task's own code does the work (the recipe's
`local` profile: the generated image set, its split and pairs, the image processor, the ranker, its loss), with
a DINOv2 of the chosen shape initialised at random and loaded through from_pretrained (no hub here); the loop is
a plain AdamW step on the projector, not DeepSpeed (the same work per step, none of the runtime). On a GPU the
model runs in bf16, as the recipe trains it.

  inference   32 pairs (64 images) scored per forward, eval mode, no autograd: the model alone (pixels already
              on the device) and end to end (decode, resize and normalise included); peak memory of that
  train step  one batch of 32 pairs, uncached (pixels through the frozen backbone, the projector learns)
  epoch       `--pairs` pairs: uncached (two backbone passes a pair) vs cached (one pass per image of the set,
              then the projector on stored features); the cached first epoch includes computing the features
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

from _harness import PROJECT, table

SHAPES = {  # DINOv2 sizes (hidden, layers, heads); patch 14
    "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=["tiny", *SHAPES], default="small")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32, help="pairs per batch")
    parser.add_argument("--pairs", type=int, default=512, help="pairs per epoch")
    parser.add_argument("--repeats", type=int, default=5, help="timed inference batches")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    import torch

    from spottrain import runtime

    device = runtime.device()
    with tempfile.TemporaryDirectory(prefix="bench-ranking-") as scratch:
        root = Path(scratch)
        backbone = args.backbone if args.backbone == "tiny" else str(_random_backbone(root, args))
        figures = {"device": runtime.device_name(), "torch": torch.__version__, "backbone": args.backbone,
                   "image_size": args.image_size, "batch_pairs": args.batch, "epoch_pairs": args.pairs}
        figures.update(_inference(_task(root, backbone, args, cached=False), args, device))
        figures.update(_train_step(_task(root, backbone, args, cached=False), args, device))
        uncached = _epochs(_task(root, backbone, args, cached=False), args, device)
        cached = _epochs(_task(root, backbone, args, cached=True), args, device)
    figures.update({f"epoch_uncached_{k}": v for k, v in uncached.items()})
    figures.update({f"epoch_cached_{k}": v for k, v in cached.items()})
    figures["speedup_first_epoch"] = uncached["first_s"] / cached["first_s"]
    figures["speedup_later_epoch"] = uncached["later_s"] / cached["later_s"]
    print(table(["figure", "value"], [[k, v] for k, v in figures.items()]))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


def _random_backbone(root: Path, args) -> Path:
    """A DINOv2 of the chosen shape with random weights, saved where from_pretrained finds it."""
    from transformers import Dinov2Config, Dinov2Model

    hidden, layers, heads = SHAPES[args.backbone]
    config = Dinov2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                          intermediate_size=4 * hidden, patch_size=14, image_size=518)
    path = root / f"dinov2-{args.backbone}"
    Dinov2Model(config).save_pretrained(path)
    return path


def _task(root: Path, backbone: str, args, cached: bool):
    from spottrain.run_files import RunFiles
    from spottrain.runtime import Ranks
    from spottrain.tasks.ranking.task import PairwiseRankingTask
    from spottrain_contract.recipe import load_recipe
    from spottrain_contract.store import open_store

    loaded = load_recipe("pairwise_ranking", project_dir=PROJECT, profile="local", overrides=[
        f"train.model.backbone={backbone}", f"train.model.image_size={args.image_size}",
        f"train.data.image_dir={root / 'images'}", f"train.data.pairs_per_epoch={args.pairs}",
        f"train.ranking.cache_features={str(cached).lower()}", f"train.ranking.feature_batch={2 * args.batch}",
        f"train.checkpoint.local_dir={root / ('cached' if cached else 'uncached')}"])
    return PairwiseRankingTask(loaded.recipe.train, Ranks(0, 0, 1), RunFiles(open_store(str(root / "store")), "b"))


def _on(model, device):
    import torch

    return model.to(device, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)


def _inference(task, args, device) -> dict:
    import torch

    model = _on(task.inference_model(), device).eval()
    paths = [task.catalog.paths[i % len(task.catalog)] for i in range(2 * args.batch)]
    on_device = task.pixels_of(paths)
    model_only, end_to_end = [], []
    _reset_peak(device)
    with torch.no_grad():
        for repeat in range(args.repeats + 1):  # the first is a warm-up
            started = _synced(device)
            model(pixel_values=on_device)
            model_only.append(_synced(device) - started)
            started = _synced(device)
            model(pixel_values=task.pixels_of(paths))
            end_to_end.append(_synced(device) - started)
    per_pair = lambda times: 1000 * statistics.median(times[1:]) / args.batch  # noqa: E731
    return {"inference_ms_per_pair_model": per_pair(model_only), "inference_ms_per_pair_end_to_end":
            per_pair(end_to_end), "inference_peak_gb": _peak_gb(device)}


def _train_step(task, args, device) -> dict:
    import torch

    model = _on(task.build_model(), device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = task.batch(task.training_indices(0)[: args.batch]).to(device)
    _reset_peak(device)
    for _ in range(2):
        loss, _ = task.loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {"train_step_peak_gb": _peak_gb(device)}


def _epochs(task, args, device) -> dict:
    """Seconds of a first epoch (with the features computed, when cached) and of a second."""
    import torch

    started = _synced(device)
    model = _on(task.build_model(), device).train()  # cached: computes every image's features here
    built = _synced(device) - started
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    seconds = []
    for epoch in range(2):
        indices = task.training_indices(epoch)
        started = _synced(device)
        for start in range(0, len(indices) - args.batch + 1, args.batch):
            loss, _ = task.loss(model, task.batch(indices[start:start + args.batch]).to(device))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        seconds.append(_synced(device) - started)
    return {"first_s": built + seconds[0], "later_s": seconds[1]}


def _synced(device) -> float:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def _reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_gb(device) -> float:
    """GPU: the peak allocated since the reset; CPU: the process's resident high-water mark."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


if __name__ == "__main__":
    main()
