"The codebook of the VQ-VAE: straight-through gradient, losses, EMA, k-means, dead codes, health, determinism of the reservoir."
import pytest
import torch
from medvox_nb.core import ConfigError
from medvox_nb.vqvae.quantizer import VectorQuantizer, codebook_health, kmeans, nearest_code, per_sample_mean


def test_nearest_code_is_the_brute_force_argmin():
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(2000, 16, generator=g), torch.randn(300, 16, generator=g)
    idx, d = nearest_code(x, c, chunk=777)
    ref = torch.cdist(x, c).argmin(1)
    assert torch.equal(idx, ref)
    torch.testing.assert_close(d, ((x - c[idx]) ** 2).sum(1), rtol=1e-4, atol=1e-4)


def test_straight_through_value_is_the_code_and_gradient_the_identity():
    torch.manual_seed(0)
    q = VectorQuantizer(32, 8)
    z = torch.randn(50, 8, requires_grad=True)
    out = q(z)
    torch.testing.assert_close(out['z_q'], q.embeddings.weight[out['indices'][:, 0]].detach(), rtol=0, atol=1e-6)
    (out['z_q'] * torch.arange(8.)).sum().backward()
    assert torch.equal(z.grad, torch.arange(8.).expand(50, 8))
    assert q.embeddings.weight.grad is None


def test_losses_are_per_sample_means_with_the_seed_weights():
    torch.manual_seed(0)
    q = VectorQuantizer(16, 4, lambda_vq=2.0, lambda_commitment=0.25)
    z = torch.randn(30, 4)
    batch = torch.tensor([0] * 10 + [1] * 20)
    out = q(z, batch, 2)
    e = q.lookup(out['indices'])
    per_row = ((z - e) ** 2).mean(1)
    expect = (per_row[:10].mean() + per_row[10:].mean()) / 2
    torch.testing.assert_close(out['commitment'], 0.25 * expect)
    torch.testing.assert_close(out['vq'], 2.0 * expect)
    # a shape's loss does not depend on how many voxels the other shape has
    torch.testing.assert_close(per_sample_mean(per_row, batch, 2), expect)


def test_group_quantization_shares_one_codebook():
    q = VectorQuantizer(64, 32, vq_group_size=8)
    assert q.embeddings.weight.shape == (64, 8) and q.groups == 4
    z = torch.randn(7, 32)
    out = q(z)
    assert out['indices'].shape == (7, 4)
    torch.testing.assert_close(out['z_q'], q.lookup(out['indices']))
    with pytest.raises(ConfigError, match='must divide'):
        VectorQuantizer(64, 32, vq_group_size=5)


def test_ema_codebook_follows_the_data_and_is_not_a_gradient_parameter():
    torch.manual_seed(0)
    q = VectorQuantizer(4, 2, use_ema_update=True, vq_decay=0.8)
    assert not q.embeddings.weight.requires_grad
    centres = torch.tensor([[5., 5.], [-5., 5.], [5., -5.], [-5., -5.]])
    data = (centres[:, None] + 0.05 * torch.randn(4, 100, 2)).reshape(-1, 2)
    q.kmeans_init(data[torch.randperm(400)[:50]])
    for _ in range(30): q(data)
    got = q.embeddings.weight[torch.cdist(centres, q.embeddings.weight).argmin(1)]
    torch.testing.assert_close(got, centres, rtol=0, atol=0.05)
    assert q(data)['vq'] == 0          # no codebook loss: the EMA moves the codes


def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(8, 4, generator=g) * 10
    x = (centres[:, None] + 0.01 * torch.randn(8, 50, 4, generator=g)).reshape(-1, 4)
    c = kmeans(x, 8, iters=20, generator=torch.Generator().manual_seed(0))
    assert torch.cdist(centres, c).min(1).values.max() < 0.1


def test_dead_codes_are_reseeded_from_the_reservoir_where_the_data_are():
    torch.manual_seed(0)
    q = VectorQuantizer(128, 8, reservoir_size=4096, reservoir_per_sample=1024)
    with torch.no_grad(): q.embeddings.weight[:] = 100.0 + torch.randn(128, 8)     # every code far away
    data = torch.randn(4096, 8)
    q.add_to_reservoir(q.sample_rows(data, torch.zeros(4096, dtype=torch.long), [0], salt=0))
    q.usage.zero_(); q.train(); q(data)
    dead = q.reinit_dead_codes(torch.Generator().manual_seed(0))
    assert len(dead) >= 120
    used = (torch.bincount(q(data)['indices'].view(-1), minlength=128) > 0).sum()
    assert used >= 120
    assert q.embeddings.weight[dead].abs().max() < 10                              # now among the data


def test_reservoir_rows_do_not_depend_on_how_the_batch_is_split():
    q = VectorQuantizer(16, 4, reservoir_size=100, reservoir_per_sample=5)
    z = torch.randn(40, 4)
    batch = torch.tensor([0] * 15 + [1] * 25)
    whole = q.sample_rows(z, batch, keys=[3, 8], salt=11)
    first = q.sample_rows(z[:15], torch.zeros(15, dtype=torch.long), keys=[3], salt=11)
    second = q.sample_rows(z[15:], torch.zeros(25, dtype=torch.long), keys=[8], salt=11)
    assert torch.equal(whole, torch.cat([first, second]))
    assert not torch.equal(whole, q.sample_rows(z, batch, keys=[3, 8], salt=12))


def test_vq_state_round_trip_continues_identically():
    torch.manual_seed(0)
    a = VectorQuantizer(32, 4, use_ema_update=True, reservoir_size=64, reservoir_per_sample=8)
    z = torch.randn(200, 4)
    b_ = torch.zeros(200, dtype=torch.long)
    for s in range(3): a(z); a.add_to_reservoir(a.sample_rows(z, b_, [0], s))
    b = VectorQuantizer(32, 4, use_ema_update=True, reservoir_size=64, reservoir_per_sample=8)
    b.load_state_dict(a.state_dict()); b.load_vq_state(a.vq_state())
    for q in (a, b):
        q(z); q.add_to_reservoir(q.sample_rows(z, b_, [0], 9)); q.reinit_dead_codes(torch.Generator().manual_seed(5))
    assert torch.equal(a.embeddings.weight, b.embeddings.weight) and torch.equal(a.reservoir, b.reservoir)


def test_codebook_health():
    h = codebook_health(torch.tensor([10., 10., 10., 10., 0., 0., 0., 0.]))
    assert h['codes_used'] == 4 and h['utilisation'] == 0.5
    assert abs(h['entropy'] - 2.0) < 1e-12 and abs(h['perplexity'] - 4.0) < 1e-9
    skew = codebook_health(torch.tensor([97., 1., 1., 1.]))
    assert skew['codes_used'] == 4 and skew['perplexity'] < 1.3            # used, but barely: perplexity tells
