"""Avalanche on the transfer scenario of `keras-incremental bench --scenario
transfer`, for side-by-side numbers (not part of the package).

The same protocol in PyTorch: the protocol MLP's body (input-256-256, ReLU)
trained with a 5-way head on all the training data of classes 0..4 for 5
epochs (Adam 1e-3, batch 32), then frozen; classes 5..9 arrive one per
experience, and an Avalanche strategy trains a new head on the frozen
features (5 epochs per experience, a 200-sample memory where the strategy
keeps one). After each experience, accuracy on the test data of the new
classes seen so far; final accuracy, forgetting and time as in
`../shared/peers/cl_metrics.py`.

Run it with the peers' venv (see `../shared/peers/README.md`), on the split
the package's run uses (`--data`, the same `.npz` both sides read):

    WANDB_MODE=disabled BENCH_THREADS=1 $AVALANCHE_VENV/bin/python \\
        benchmarks/avalanche_transfer.py --strategy der --seed 0 \\
        --data ../shared/peers/data/mnist5k_split.npz --out avl.json
"""

# The imports follow the peers' order: tv_shim before torchvision/avalanche.
# ruff: noqa: I001

import argparse
import json
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("WANDB_MODE", "disabled")
PEERS = os.environ.get(
    "PEERS_DIR",
    os.path.join(os.path.dirname(__file__), "..", "..", "shared", "peers"),
)
sys.path.insert(0, os.path.join(PEERS, "avalanche_bench"))
sys.path.insert(0, PEERS)

import tv_shim  # noqa: E402,F401  (before torchvision / avalanche)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from avalanche.benchmarks.scenarios.deprecated.generators import (  # noqa: E402
    nc_benchmark,
)
from avalanche.benchmarks.utils.classification_dataset import (  # noqa: E402
    _make_taskaware_tensor_classification_dataset as make_tensor_ds,
)
from avalanche.evaluation.metrics import accuracy_metrics  # noqa: E402
from avalanche.models import IncrementalClassifier  # noqa: E402
from avalanche.training.plugins import EvaluationPlugin  # noqa: E402
from avalanche.training.supervised import DER  # noqa: E402
from avalanche.training.supervised import LwF  # noqa: E402
from avalanche.training.supervised import Naive  # noqa: E402
from avalanche.training.supervised import Replay  # noqa: E402
from torch import nn  # noqa: E402

import cl_metrics as M  # noqa: E402

PRETRAIN = [0, 1, 2, 3, 4]
NEW = [5, 6, 7, 8, 9]


def pretrained_body(x, y, in_dim, seed):
    torch.manual_seed(seed)
    body = nn.Sequential(
        nn.Linear(in_dim, M.HIDDEN),
        nn.ReLU(),
        nn.Linear(M.HIDDEN, M.HIDDEN),
        nn.ReLU(),
    )
    head = nn.Linear(M.HIDDEN, len(PRETRAIN))
    model = nn.Sequential(body, head)
    optimizer = torch.optim.Adam(model.parameters(), lr=M.LR)
    mask = np.isin(y, PRETRAIN)
    xs, ys = torch.from_numpy(x[mask]), torch.from_numpy(y[mask])
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(M.EPOCHS):
        order = torch.randperm(len(ys))
        for start in range(0, len(ys), M.BATCH_SIZE):
            index = order[start : start + M.BATCH_SIZE]
            optimizer.zero_grad()
            loss_fn(model(xs[index]), ys[index]).backward()
            optimizer.step()
    for parameter in body.parameters():
        parameter.requires_grad_(False)
    body.eval()
    return body


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--strategy", required=True, choices=["naive", "replay", "der", "lwf"]
    )
    parser.add_argument("--data", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(M.bench_threads())
    torch.set_num_interop_threads(1)
    np.random.seed(args.seed)

    with np.load(args.data, allow_pickle=False) as file:
        x_train = file["X_train"].astype(np.float32)
        y_train = file["y_train"].astype(np.int64)
        x_test = file["X_test"].astype(np.float32)
        y_test = file["y_test"].astype(np.int64)
    body = pretrained_body(x_train, y_train, x_train.shape[1], args.seed)

    start = time.perf_counter()
    train = np.isin(y_train, NEW)
    test = np.isin(y_test, NEW)
    benchmark = nc_benchmark(
        make_tensor_ds(
            torch.from_numpy(x_train[train]), torch.from_numpy(y_train[train])
        ),
        make_tensor_ds(
            torch.from_numpy(x_test[test]), torch.from_numpy(y_test[test])
        ),
        n_experiences=len(NEW),
        task_labels=False,
        shuffle=False,
        fixed_class_order=NEW,
        class_ids_from_zero_from_first_exp=True,
    )
    if args.strategy == "der":
        head = nn.Linear(M.HIDDEN, len(NEW))  # DER stores fixed-width logits
    else:
        head = IncrementalClassifier(M.HIDDEN, initial_out_features=1)
    model = nn.Sequential(body, head)
    common = dict(
        model=model,
        optimizer=torch.optim.Adam(head.parameters(), lr=M.LR),
        criterion=nn.CrossEntropyLoss(),
        train_mb_size=M.BATCH_SIZE,
        train_epochs=M.EPOCHS,
        eval_mb_size=M.EVAL_BATCH_SIZE,
        device="cpu",
        evaluator=EvaluationPlugin(
            accuracy_metrics(experience=True, stream=True), loggers=[]
        ),
    )
    if args.strategy == "naive":
        strategy = Naive(**common)
    elif args.strategy == "replay":
        strategy = Replay(**common, mem_size=M.MEM_SIZE)
    elif args.strategy == "lwf":
        strategy = LwF(**common, alpha=1.0, temperature=2.0)
    else:
        strategy = DER(**common, mem_size=M.MEM_SIZE, alpha=0.1, beta=0.5)

    matrix, seen = [], []
    for k, experience in enumerate(benchmark.train_stream):
        strategy.train(experience)
        body.eval()  # the frozen body stays in inference mode
        result = strategy.eval(benchmark.test_stream[: k + 1])
        row = []
        for j in range(len(NEW)):
            key = f"Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp{j:03d}"
            row.append(float(result[key]) if j <= k else None)
        matrix.append(row)
        seen.append(
            float(result["Top1_Acc_Stream/eval_phase/test_stream/Task000"])
        )
    seconds = time.perf_counter() - start
    summary = M.summarize_matrix(matrix, seen)
    with open(args.out, "w") as file:
        json.dump(
            {
                "framework": "avalanche",
                "scenario": "transfer",
                "strategy": args.strategy,
                "seed": args.seed,
                "data": args.data,
                "acc_matrix": matrix,
                "seen_acc": seen,
                **summary,
                "seconds": seconds,
                "threads": torch.get_num_threads(),
            },
            file,
            indent=1,
        )
    print(
        f"avalanche {args.strategy} transfer s{args.seed}: final "
        f"{summary['final_acc']:.4f} forgetting {summary['avg_forgetting']} "
        f"{seconds:.1f} s"
    )


if __name__ == "__main__":
    main()
