"""The GPU path: skipped where no CUDA device is visible (CI, developer machines without one).

``python benchmarks/gpu_check.py`` runs these on a GPU machine with the GPU benchmarks.
"""

import pytest
import torch

from vqvae import VQVAE, EMAVectorQuantizer, TransformerPrior
from vqvae.precision import autocast_for

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device is visible")]


def test_quantizer_on_cuda_matches_the_cpu():
    torch.manual_seed(0)
    q = EMAVectorQuantizer(512, 64, kmeans_init=False)
    z = torch.randn(16, 64, 8, 8)
    expected = q.eval().encode(z)
    assert torch.equal(q.cuda().encode(z.cuda()).cpu(), expected)


def test_bf16_training_step_keeps_codes_and_statistics_in_fp32():
    torch.manual_seed(0)
    model = VQVAE(in_channels=3, hidden=64, res_hidden=32, codebook_size=128, code_dim=32).cuda()
    x = torch.rand(32, 3, 32, 32, device="cuda")
    model.train()
    with autocast_for("bf16", torch.device("cuda")):
        out = model(x)
    out.loss.backward()
    assert out.loss.dtype == torch.float32 and model.quantizer.codebook.dtype == torch.float32
    model.eval()
    exact = model.encode(x)
    with autocast_for("bf16", torch.device("cuda")):
        fast = model.encode(x)
    assert (fast == exact).float().mean() >= 0.98


def test_cached_sampling_on_cuda_equals_uncached():
    prior = TransformerPrior(64, (4, 4), width=64, depth=2).cuda().eval()
    a = prior.sample(4, generator=torch.Generator("cuda").manual_seed(0), use_cache=True)
    b = prior.sample(4, generator=torch.Generator("cuda").manual_seed(0), use_cache=False)
    assert torch.equal(a, b)
