"""Train a byte-level MatMul-free LM (ternary QAT, or the float baseline) on Shakespeare.

Usage::

    python -m models.train --d-model 128 --n-layers 4 --steps 1200 --batch 32 --seq-len 256 \
        --lr 3e-3 --seed 0 --out models/checkpoints/mmfree-tiny.safetensors
    python -m models.train ... --no-quant --out models/checkpoints/mmfree-tiny-float.safetensors
    torchrun --nproc-per-node 2 -m models.train ...       # data-parallel, same global batch

Training is seeded and reproducible: the model is initialised with ``torch.manual_seed(seed)``
and batch ``k`` is drawn from a generator seeded with ``(seed, k)``, so the data order does not
depend on the number of processes. Under ``torchrun`` (``WORLD_SIZE`` set) the global batch is
split by rank (``rows rank::world_size``), gradients are averaged by DDP (gloo on CPU, nccl on
CUDA) and only rank 0 prints, evaluates and writes files.

Optimiser: AdamW (betas 0.9/0.95, weight decay on the BitLinear matrices only), linear warm-up
then cosine decay to 10 % of the peak learning rate, gradient clipping at norm 1. Ternary models
train with the straight-through estimator (``models.quant``) on latent float weights.

Outputs (rank 0): the inference checkpoint (``--out``, see ``models.checkpoint``; rewritten at
every evaluation so an interrupted run still leaves one) and a text log next to it
(``<out stem>.train.log``) with the arguments, the corpus provenance, progress lines and the
final validation bits per byte (whole held-out works, windows of ``--eval-len`` bytes, each
starting from a zero state).

Choice of the shipped shape (``mmfree-tiny``): see :data:`SHAPE_NOTES`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .checkpoint import export_checkpoint
from .config import ModelConfig
from .data import corpus_info, load_corpus
from .mmfree import MMFreeLM

__all__ = ["SHAPE_NOTES", "parse_args", "lr_at", "get_batch", "evaluate_bpb", "main"]

SHAPE_NOTES = """\
Shape choice for the on-chip model (budget: about 1.2 M ternary weights in block RAM, all
BitLinears including the LM head; per layer 4 d^2 + 3 I d with I = 256 ceil(int(8d/3) / 256),
head 256 d):
  d=128 L=4 I=512: 4 x 262,144 + 32,768 = 1,081,344 ternary weights
  d=192 L=2 I=512: 2 x 442,368 + 49,152 =   933,888
  d=256 L=1 I=768: 1 x 851,968 + 65,536 =   917,504
Pilots (ternary QAT, seed 0, identical batches: 150 steps x 16 x 128 bytes = 307 k bytes,
lr 3e-3 cosine, 1 thread each, run side by side on the shared 2-core CPU; val = first 64 KiB of
the held-out works, windows of 512):
  d=128 L=4: val 2.838 bpb, train loss at step 150 2.007, 540 s wall
  d=192 L=2: val 2.788 bpb, train loss at step 150 1.968, 462 s wall
  d=256 L=1: val 2.818 bpb, train loss at step 150 1.965, 381 s wall
Chosen: d=192 L=2 (I=512). Best validation bpb of the three at equal data with 14 % fewer
ternary weights than d=128 L=4 (quality per weight), and it overtook the single-layer model by
step 125 (a one-layer MLGRU has only one element-wise recurrence; two layers also exercise the
learned forget-gate lower bounds). d=128 L=4 learns slowest early and costs the most CPU time
per step (four sequential recurrences), which matters with a ~45 minute CPU budget for two
runs; with much longer training it might catch up (not measured). d=192 = 3 x 64 lanes and
I=512 keep the matrices multiples of 64 for the accelerator. Caveat: the pilots are short and
single-seed; the differences (0.03-0.05 bpb) are small.\
"""


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(prog="python -m models.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-layers", type=int, default=4)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=32, help="global batch (sequences per step, all ranks)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 5%% of --steps)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-quant", action="store_true", help="float baseline: plain linear layers, same shape")
    p.add_argument("--out", type=Path, default=Path("models/checkpoints/mmfree-tiny.safetensors"))
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-len", type=int, default=1024, help="window length of the validation pass")
    p.add_argument("--eval-max-bytes", type=int, default=32768, help="validation bytes used during training (final pass uses all)")
    p.add_argument("--final-eval-bytes", type=int, default=None, help="limit the final validation pass (default: all held-out bytes)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--note", default="", help="free text stored in the log and checkpoint meta")
    return p.parse_args(argv)


def lr_at(step: int, args: argparse.Namespace) -> float:
    """Learning rate at ``step``: linear warm-up, then cosine decay to ``min_lr_ratio * lr``."""
    warmup = args.warmup if args.warmup is not None else max(1, args.steps // 20)
    if step < warmup:
        return args.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, args.steps - warmup))
    ratio = args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return args.lr * ratio


def get_batch(data: torch.Tensor, step: int, batch: int, seq_len: int, seed: int,
              rank: int = 0, world: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``rank::world`` of global batch ``step``: random windows of ``seq_len + 1`` bytes."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    starts = torch.randint(0, len(data) - seq_len - 1, (batch,), generator=g)[rank::world]
    idx = starts[:, None] + torch.arange(seq_len + 1)[None, :]
    seq = data[idx].long()
    return seq[:, :-1], seq[:, 1:]


@torch.no_grad()
def evaluate_bpb(model: MMFreeLM, data: torch.Tensor, window: int, max_bytes: int | None = None,
                 batch: int = 32, device: str = "cpu") -> float:
    """Bits per byte over ``data`` cut into windows of ``window`` bytes (zero state each).

    Every byte except the first of each window is predicted from its window's prefix.
    """
    was_training = model.training
    model.eval()
    if max_bytes is not None:
        data = data[:max_bytes]
    n = (len(data) // window) * window
    windows = data[:n].view(-1, window).long()
    if n < len(data) and len(data) - n > 1:
        tail = data[n:].long()[None, :]
    else:
        tail = None
    nll, count = 0.0, 0
    for i in range(0, windows.shape[0], batch):
        chunk = windows[i: i + batch].to(device)
        logits = model(chunk[:, :-1])
        nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), chunk[:, 1:].reshape(-1), reduction="sum").item()
        count += chunk[:, 1:].numel()
    if tail is not None:
        tail = tail.to(device)
        logits = model(tail[:, :-1])
        nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tail[:, 1:].reshape(-1), reduction="sum").item()
        count += tail[:, 1:].numel()
    model.train(was_training)
    return nll / count / math.log(2)


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent.parent).stdout.strip()
    except OSError:
        return "unknown"


def main(argv=None) -> int:
    """Entry point; returns the process exit status."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    distributed = "WORLD_SIZE" in os.environ
    rank = 0
    device = args.device
    if distributed:
        if device.startswith("cuda"):
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local_rank)
            device = f"cuda:{local_rank}"
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")
        rank = dist.get_rank()
        world = dist.get_world_size()
        if args.batch % world:
            raise SystemExit(f"--batch {args.batch} is not divisible by WORLD_SIZE {world}")
    is_main = rank == 0

    log_path = args.out.with_suffix("").with_suffix(".train.log") if args.out.suffix else Path(str(args.out) + ".train.log")
    log_fh = None
    if is_main:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        log_fh = open(log_path, "w", encoding="utf-8")

    def log(line: str) -> None:
        if is_main:
            print(line, flush=True)
            log_fh.write(line + "\n")
            log_fh.flush()

    train_bytes, val_bytes = load_corpus()
    train_data = torch.frombuffer(bytearray(train_bytes), dtype=torch.uint8)
    val_data = torch.frombuffer(bytearray(val_bytes), dtype=torch.uint8)
    config = ModelConfig(d_model=args.d_model, n_layers=args.n_layers, quantize=not args.no_quant)

    torch.manual_seed(args.seed)
    model = MMFreeLM(config).to(device)
    train_model = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device] if device.startswith("cuda") else None)

    decay = [p for n, p in model.named_parameters() if n.endswith("_proj.weight") or n == "lm_head.weight"]
    no_decay = [p for n, p in model.named_parameters() if not (n.endswith("_proj.weight") or n == "lm_head.weight")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)

    info = corpus_info()
    started = datetime.datetime.now(datetime.timezone.utc)
    log(f"# models.train {started.isoformat(timespec='seconds')}")
    log(f"# command: {' '.join([sys.executable, '-m', 'models.train'] + (argv if argv is not None else sys.argv[1:]))}")
    log(f"# args: {json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()})}")
    log(f"# config: {json.dumps(config.to_dict())}  d_ff={config.d_ff}  ternary weights={config.ternary_weights:,}"
        f"  parameters={sum(p.numel() for p in model.parameters()):,}")
    log(f"# corpus: {json.dumps(info)}")
    log(f"# world_size={world} device={device} threads={args.threads} torch={torch.__version__} "
        f"python={platform.python_version()} git={_git_commit()}")
    for line in SHAPE_NOTES.splitlines():
        log(f"# {line}")
    if args.note:
        log(f"# note: {args.note}")

    tokens_per_step = args.batch * args.seq_len
    t0 = time.time()
    last_t, last_step = t0, 0
    val_bpb = float("nan")
    model.train()

    def export(final: bool, step: int) -> None:
        meta = {
            "name": args.out.stem,
            "steps": step,
            "final": final,
            "val_bpb": val_bpb,
            "val_bpb_protocol": f"whole held-out works, windows of {args.eval_len} bytes, zero state per window"
                                + ((f", first {args.final_eval_bytes} bytes" if args.final_eval_bytes else "")
                                   if final else f", first {args.eval_max_bytes} bytes"),
            "train_args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "corpus": info,
            "world_size": world,
            "train_seconds": round(time.time() - t0, 1),
            "tokens_seen": step * tokens_per_step,
            "torch": torch.__version__,
            "git_commit": _git_commit(),
        }
        export_checkpoint(model, args.out, meta)

    for step in range(args.steps):
        lr = lr_at(step, args)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = get_batch(train_data, step, args.batch, args.seq_len, args.seed, rank, world)
        x, y = x.to(device), y.to(device)
        logits = train_model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()

        done = step + 1
        if done % args.log_every == 0 or done == 1 or done == args.steps:
            train_loss = loss.detach()
            if distributed:  # log the loss of the whole global batch, not rank 0's share
                train_loss = train_loss.clone()
                dist.all_reduce(train_loss)
                train_loss /= world
        if is_main and (done % args.log_every == 0 or done == 1 or done == args.steps):
            now = time.time()
            tps = (done - last_step) * tokens_per_step / max(now - last_t, 1e-9)
            last_t, last_step = now, done
            log(f"step {done:6d}/{args.steps}  loss {train_loss.item():.4f}  bpb {train_loss.item() / math.log(2):.4f}  "
                f"lr {lr:.2e}  gnorm {gnorm.item():.3f}  tok/s {tps:,.0f}  elapsed {now - t0:,.0f}s")
        if is_main and done % args.eval_every == 0 and done != args.steps:
            val_bpb = evaluate_bpb(model, val_data, args.eval_len, args.eval_max_bytes, device=device)
            log(f"eval  step {done:6d}  val_bpb(first {args.eval_max_bytes} bytes) {val_bpb:.4f}")
            export(False, done)
            last_t = time.time()

    if is_main:
        t_train = time.time() - t0
        n_eval = len(val_data) if args.final_eval_bytes is None else min(args.final_eval_bytes, len(val_data))
        val_bpb = evaluate_bpb(model, val_data, args.eval_len, n_eval, device=device)
        log(f"final val_bpb {val_bpb:.4f}  ({n_eval:,} of {len(val_data):,} held-out bytes, windows of {args.eval_len})")
        log(f"train wall time {t_train:,.0f}s  total {time.time() - t0:,.0f}s  tokens seen {args.steps * tokens_per_step:,}")
        export(True, args.steps)
        log(f"wrote {args.out}")
        log_fh.close()
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
