"""The peers' BYOL step on a GPU (PyTorch), to run beside `bench/bench_jax_step.py` on the same GPU.

    python bench/peer_byol_pytorch_gpu.py     # torch, torchvision, byol-pytorch (bench/requirements-peer.txt)

Bench-only, never imported by byol_tf. For ResNet-50 at 224 px (batch 256) and a CIFAR ResNet-18 at 32 px
(batch 512), bf16 autocast, synthetic data already on the GPU, it times: supervised ResNet forward +
backward (one view); a compute-only BYOL step in plain PyTorch (both views through each network as one
batch, target forward without gradient, `torch._foreach_lerp_` EMA: the practical limit); and lucidrains'
byol-pytorch `BYOL` with its default augmentation inside the step. Prints JSON lines, the last one
starting with `FINAL`.
"""
import sys, time, json, copy
import torch, torchvision
import torch.nn.functional as F
torch.backends.cudnn.benchmark = True
torch.backends.cuda.matmul.allow_tf32 = True; torch.backends.cudnn.allow_tf32 = True

def timeit(step, n=20, warm=5):
    for _ in range(warm): step()
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(n): step()
    torch.cuda.synchronize(); return (time.perf_counter() - t) / n

def make_net(arch, cifar):
    net = getattr(torchvision.models, arch)()
    if cifar:
        net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False); net.maxpool = torch.nn.Identity()
    return net.cuda().to(memory_format=torch.channels_last)

def mlp(i, h, o):
    return torch.nn.Sequential(torch.nn.Linear(i, h), torch.nn.BatchNorm1d(h), torch.nn.ReLU(True), torch.nn.Linear(h, o)).cuda()

def supervised(arch, size, batch, cifar):
    net = make_net(arch, cifar); opt = torch.optim.SGD(net.parameters(), 0.1, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device="cuda")
    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    return batch / timeit(step)

def byol_compute(arch, size, batch, cifar, compile_=False):
    enc = make_net(arch, cifar); d = enc.fc.in_features; enc.fc = torch.nn.Identity()
    proj = mlp(d, 4096, 256); pred = mlp(256, 4096, 256)
    online = torch.nn.ModuleDict(dict(enc=enc, proj=proj))
    target = copy.deepcopy(online).requires_grad_(False)
    params = list(online.parameters()) + list(pred.parameters())
    opt = torch.optim.SGD(params, 0.1, momentum=0.9)
    x1 = torch.randn(batch, 3, size, size, device="cuda").to(memory_format=torch.channels_last)
    x2 = torch.randn(batch, 3, size, size, device="cuda").to(memory_format=torch.channels_last)
    def loss_fn(x1, x2):
        x = torch.cat([x1, x2])
        with torch.autocast("cuda", dtype=torch.bfloat16):
            p = pred(online["proj"](online["enc"](x)))
            with torch.no_grad():
                z = target["proj"](target["enc"](x))
        p1, p2 = p.float().chunk(2); z1, z2 = z.float().chunk(2)
        l = lambda a, b: (2 - 2 * F.cosine_similarity(a, b, dim=-1)).mean()
        return l(p1, z2) + l(p2, z1)
    f = torch.compile(loss_fn) if compile_ else loss_fn
    op, tp = list(online.parameters()), list(target.parameters())
    def step():
        loss = f(x1, x2)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(tp, op, 1 - 0.99)
    return batch / timeit(step)

def byol_pytorch_pkg(arch, size, batch, cifar):
    from byol_pytorch import BYOL
    net = make_net(arch, cifar)
    learner = BYOL(net, image_size=size, hidden_layer="avgpool", use_simplicial_embeddings=False).cuda()
    opt = torch.optim.SGD(learner.parameters(), 0.1, momentum=0.9)
    x = torch.rand(batch, 3, size, size, device="cuda")
    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = learner(x)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); learner.update_moving_average()
    return batch / timeit(step)

if __name__ == "__main__":
    res = {}
    for name, arch, size, batch, cifar in [("r50_224", "resnet50", 224, 256, False), ("r18_cifar32", "resnet18", 32, 512, True)]:
        for label, fn in [("supervised", supervised), ("byol_compute", byol_compute), ("byol_pytorch_pkg", byol_pytorch_pkg)]:
            try:
                res[f"{name}/{label}_img_s"] = round(fn(arch, size, batch, cifar), 1)
            except Exception as e:
                res[f"{name}/{label}_error"] = f"{type(e).__name__}: {e}"[:300]
            print(json.dumps(res), flush=True)
    print("FINAL", json.dumps(res))
