"""Train a tiny transformer on a mixsql mixture, driven by a YAML config (torchtitan / llm-foundry style).

    torchrun --nproc-per-node 2 examples/train.py --config examples/configs/tiny_ado.yaml --out runs/ado --plot
    python examples/train.py --config examples/configs/tiny_ado.yaml --out runs/ado     # one process

The config's ``data`` section is all mixsql needs (``mixsql.from_config``); ``model`` and ``train``
are this script's. Every step logs the loss, each component's mean loss and, for an adaptive
mixture, the weights ADO chose (``metrics.jsonl`` in ``--out``; ``--plot`` draws them). Every
``checkpoint_every`` steps the model, the optimiser and the data state (position, weight log,
ADO's state) go to ``checkpoint.pt``; ``--resume`` continues from it, at any world size, on the
same stream bit for bit. Runs on CPU with gloo, or on CUDA with nccl when a GPU is there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml

import mixsql
import mixsql.config


class TinyLM(torch.nn.Module):
    """A small pre-norm causal transformer."""

    def __init__(self, vocab: int, seq_len: int, d_model: int = 64, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, d_model)
        self.position = torch.nn.Embedding(seq_len, d_model)
        layer = torch.nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, dropout=0.0, batch_first=True,
                                                 norm_first=True)
        self.blocks = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = torch.nn.LayerNorm(d_model)
        self.head = torch.nn.Linear(d_model, vocab, bias=False)
        self.register_buffer("mask", torch.nn.Transformer.generate_square_subsequent_mask(seq_len), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        n = ids.shape[1]
        x = self.embed(ids) + self.position(torch.arange(n, device=ids.device))[None]
        x = self.blocks(x, mask=self.mask[:n, :n], is_causal=True)
        return self.head(self.norm(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.pt")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (all of them)")
    parser.add_argument("--plot", action="store_true", help="draw losses and weights into --out/training.png")
    parser.add_argument("--eval", type=Path, default=None,
                        help="a .mixsql of the target set: its mean token loss after training goes to summary.json")
    parser.add_argument("--eval-batches", type=int, default=20, help="batches of the target set to evaluate")
    parser.add_argument("--logprobs", type=Path, default=None,
                        help="a .mixsql of the target set: each document's log-probability under the trained model "
                             "goes to --out/logprobs.npz (MixMin's input)")
    parser.add_argument("--logprobs-docs", type=int, default=200, help="documents of the target set to score")
    args = parser.parse_args()
    cfg = yaml.safe_load(args.config.read_text())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    train = cfg.get("train", {})
    torch.manual_seed(int(train.get("seed", 0)))

    # the data: one call; datasets registered by one process, the others wait for it
    base = args.config.resolve().parent
    if rank == 0:
        data = mixsql.from_config(cfg["data"], base=base)
    if world > 1:
        dist.barrier()
    if rank != 0:
        data = mixsql.from_config(cfg["data"], base=base, register=False)
    mix = data.mix
    components = data.components
    adaptive = mix.bound.adapt is not None
    ds = data.dataset(rank, world)
    seq_len = data.config.seq_len
    vocab = mix.packed(seq_len).tokenizer.tokenizer.get_vocab_size()

    model = TinyLM(vocab, seq_len, **cfg.get("model", {})).to(device)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(train.get("lr", 3e-3)))
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = args.out / "checkpoint.pt"
    start = 0
    if args.resume and checkpoint.exists():
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        (model.module if world > 1 else model).load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        ds.load_state_dict(saved["data"])  # position, weight log and ADO's state: any world size
        start = saved["step"]
    limit = args.max_steps if args.max_steps is not None else train.get("max_steps")
    stop = ds.batches if limit is None else min(ds.batches, int(limit))
    every, log_every = int(train.get("checkpoint_every", 50)), int(train.get("log_every", 10))
    metrics = open(args.out / f"metrics.rank{rank}.jsonl", "a" if args.resume else "w")
    began, tokens = time.perf_counter(), 0
    waited = 0.0
    clock = time.perf_counter()
    for i, batch in enumerate(data.loader(ds)):
        step = start + i
        if step >= stop:
            break
        waited += time.perf_counter() - clock
        ids = batch["input_ids"].to(device)
        labels, comp = batch["labels"].to(device), batch["component_ids"].to(device)
        logits = model(ids)
        per_token = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), reduction="none")
        sums, counts = mixsql.component_losses(per_token, comp, len(components))  # all-reduced
        weights = ds.feedback(step, sums, counts) if adaptive else None
        loss = per_token.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        tokens += ids.numel() * world
        record = {"step": step, "loss": float(loss.detach()), "weights": weights,
                  "component_loss": {c: (float(s) / int(n) if int(n) else None)
                                     for c, s, n in zip(components, sums.tolist(), counts.tolist())},
                  "component_tokens": dict(zip(components, counts.tolist())),
                  "data": hashlib.blake2b(ids.cpu().numpy().tobytes(), digest_size=8).hexdigest()}
        metrics.write(json.dumps(record) + "\n")
        if rank == 0 and (step % log_every == 0 or step + 1 == stop):
            shown = "  ".join(f"{c}={v:.3f}" for c, v in record["component_loss"].items() if v is not None)
            w = "" if weights is None else "  weights " + " ".join(f"{c}={x:.2f}" for c, x in zip(components, weights))
            print(f"step {step:5d}  loss {record['loss']:.3f}  {shown}{w}", flush=True)
        if (step + 1) % every == 0 or step + 1 == stop:
            state = {"model": (model.module if world > 1 else model).state_dict(),
                     "optimizer": optimizer.state_dict(), "data": ds.state_dict(), "step": step + 1}
            if rank == 0:
                torch.save(state, checkpoint.with_suffix(".tmp"))
                os.replace(checkpoint.with_suffix(".tmp"), checkpoint)
        clock = time.perf_counter()
    metrics.close()
    elapsed = time.perf_counter() - began
    if rank == 0:
        summary = {"steps": stop - start, "tokens_per_s": tokens / elapsed if elapsed else None,
                   "data_wait_share": waited / elapsed if elapsed else None, "weight_log": ds.weight_log}
        if args.eval is not None:
            summary["eval_loss"] = evaluate(model.module if world > 1 else model, data, args.eval,
                                            args.eval_batches, device)
            print(f"eval loss {summary['eval_loss']:.4f} on {args.eval.name}", flush=True)
        if args.logprobs is not None:
            logprobs, lengths = document_logprobs(model.module if world > 1 else model, data, args.logprobs,
                                                  args.logprobs_docs, device)
            np.savez(args.out / "logprobs.npz", logprobs=logprobs, lengths=lengths)
            summary["logprobs"] = "logprobs.npz"
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
        print(f"{stop - start} steps, {summary['tokens_per_s']:,.0f} tokens/s, waiting for data "
              f"{summary['data_wait_share']:.1%} of the time", flush=True)
        if args.plot:
            plot(args.out, components)
    if world > 1:
        dist.destroy_process_group()


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: mixsql.config.Data, target: Path, batches: int,
             device: torch.device) -> float:
    """Mean token loss of the model on the first ``batches`` batches of the target set's packed stream."""
    mix = data.connection.load(target)
    ds = mix.torch_dataset(batch_size=data.config.batch_size, rank=0, world_size=1, seq_len=data.config.seq_len,
                           batched=True)
    total, count = 0.0, 0
    model.eval()
    for i, batch in enumerate(torch.utils.data.DataLoader(ds, batch_size=None)):
        if i >= batches:
            break
        logits = model(batch["input_ids"].to(device))
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].to(device).flatten(), reduction="sum")
        total, count = total + float(loss), count + batch["labels"].numel()
    model.train()
    return total / max(count, 1)


@torch.no_grad()
def document_logprobs(model: torch.nn.Module, data: mixsql.config.Data, target: Path, docs: int,
                      device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Each of the target set's first ``docs`` documents' total log-probability under the model (its
    tokens predicted after an EOS, in windows of seq_len) and its length in tokens."""
    mix = data.connection.load(target)
    tokenizer = mix.packed(data.config.seq_len).tokenizer
    eos, window = tokenizer.eos_id(data.config.eos), data.config.seq_len
    texts = [s["text"] for s in mix.samples(limit=docs, columns=["text"])]
    model.eval()
    logprobs, lengths = [], []
    for ids in tokenizer.encode(texts):
        sequence = torch.tensor([eos] + ids, dtype=torch.int64, device=device)
        total = 0.0
        for start in range(0, len(sequence) - 1, window):
            piece = sequence[start: start + window + 1]
            logits = model(piece[None, :-1])[0]
            total -= float(F.cross_entropy(logits.float(), piece[1:], reduction="sum"))
        logprobs.append(total)
        lengths.append(max(len(ids), 1))
    model.train()
    return np.asarray(logprobs), np.asarray(lengths, dtype=np.float64)


def plot(out: Path, components: list[str]) -> None:
    """Per-component loss curves and, for an adaptive run, the weight trajectory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in (out / "metrics.rank0.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows]
    adaptive = any(r["weights"] for r in rows)
    fig, axes = plt.subplots(1, 2 if adaptive else 1, figsize=(11 if adaptive else 6, 4), squeeze=False)
    for c in components:
        axes[0][0].plot(steps, [r["component_loss"][c] for r in rows], label=c, linewidth=0.8)
    axes[0][0].set(xlabel="step", ylabel="mean token loss", title="loss per component")
    axes[0][0].legend()
    if adaptive:
        for k, c in enumerate(components):
            axes[0][1].plot(steps, [r["weights"][k] for r in rows], label=c)
        axes[0][1].set(xlabel="step", ylabel="weight", title="weights (ADO)")
        axes[0][1].legend()
    fig.tight_layout()
    fig.savefig(out / "training.png", dpi=120)


if __name__ == "__main__":
    main()
