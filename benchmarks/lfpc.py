"""LFPC: pruning quality and search cost beside FPGM, EKG and uniform L1.

Trains ResNet-20 once on the embedded digits data (16x16 by default), then
for each FLOPs target (0.5 and 0.3) prunes that same trained model with

* **lfpc**: the criteria sampler's search (`method="lfpc"`), then one
  pruning with the learned criterion and width per group;
* **ekg**: the EKG search (`method="ekg"`);
* **fpgm**: one-shot, uniform widths, geometric-median criterion;
* **l1**: one-shot, uniform widths, L1 criterion;
* **fpgm (soft)**, only when asked for (`--methods`): the registered soft
  FPGM, which trains while it prunes for as many epochs as the others
  fine-tune (its training is its fine-tuning, so it is the one row
  without the shared fine-tuning);

and fine-tunes every pruned model the same way: the "cosine" fine-tuner
(SGD Nesterov, lr 0.01 falling along a half cosine, weight decay 5e-4,
batch 64, the same seed), then batch-norm recalibration. It prints, per
target and method, the FLOPs and parameters kept, the test accuracy right
after pruning (batch norm recalibrated) and after fine-tuning, and the
search's wall time; for LFPC also how many groups chose each criterion and
where (input half / output half of the network; the thesis observes the
geometric median in deeper layers, norms in shallow ones).

The thesis trains the sampler for 600 CIFAR epochs (58,800 Adam steps at
lr 1e-3). A CPU cannot, so the default here is `--search_epochs=50` with
batch 128 (300 steps) at lr 0.1: about the same distance the logits may
travel (lr x steps: 30 here, 59 there), far fewer samples.

    .venv/bin/python benchmarks/lfpc.py            # ~20 min on 2 busy cores
    .venv/bin/python benchmarks/lfpc.py --quick    # smoke check, ~4 min
    .venv/bin/python benchmarks/lfpc.py --plot_dir=docs  # + criteria plots
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing  # Silences TF logging before TF is imported.
from common import accuracy
from common import train  # The same pre-training recipe.

TARGETS = (0.5, 0.3)
METHODS = ("lfpc", "ekg", "fpgm", "l1")
OPTIONAL = ("fpgm (soft)",)


def parse_args(argv=None):
    parser = _timing.base_parser(
        __doc__.splitlines()[0],
        "one target (0.5), few epochs: a smoke check of the script",
    )
    parser.add_argument("--image_size", type=int, default=16)
    parser.add_argument("--pretrain_epochs", type=int, default=None)
    parser.add_argument("--search_epochs", type=int, default=None)
    parser.add_argument("--search_batch_size", type=int, default=128)
    parser.add_argument("--search_learning_rate", type=float, default=0.1)
    parser.add_argument(
        "--counts",
        default="argmax",
        help="LFPC's widths to prune with: argmax or expected.",
    )
    parser.add_argument(
        "--plot_dir",
        default=None,
        help="Write LFPC's criteria plot per target here (lfpc_<flops>.png).",
    )
    parser.add_argument("--finetune_epochs", type=int, default=None)
    parser.add_argument(
        "--targets",
        default=None,
        help="Comma-separated FLOPs fractions (default 0.5,0.3).",
    )
    parser.add_argument(
        "--methods",
        default=None,
        help=f"Comma-separated, from {','.join(METHODS + OPTIONAL)}.",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    if args.pretrain_epochs is None:
        args.pretrain_epochs = 3 if quick else 15
    if args.search_epochs is None:
        args.search_epochs = 4 if quick else 50
    if args.finetune_epochs is None:
        args.finetune_epochs = 1 if quick else 5
    args.targets = (
        [float(t) for t in args.targets.split(",")]
        if args.targets
        else ([0.5] if quick else list(TARGETS))
    )
    args.methods = args.methods.split(",") if args.methods else list(METHODS)
    unknown = sorted(set(args.methods) - set(METHODS + OPTIONAL))
    if unknown:
        parser.error(
            f"unknown --methods {unknown}; choose from {METHODS + OPTIONAL}"
        )
    return args


def create(name, model, flops, data, args):
    """The registered method behind a benchmark row."""
    from ekg_keras import methods

    train = (data.x_train, data.y_train)
    if name == "lfpc":
        return methods.get("lfpc").create(
            model,
            flops,
            train,
            search_epochs=args.search_epochs,
            batch_size=args.search_batch_size,
            learning_rate=args.search_learning_rate,
            counts=args.counts,
        )
    if name == "ekg":
        return methods.get("ekg").create(
            model, flops, train, val_per_class=8 if args.quick else 32
        )
    if name == "fpgm (soft)":
        return methods.get("fpgm").create(
            model, flops, train, epochs=args.finetune_epochs
        )
    return methods.get("oneshot").create(model, flops, criterion=name)


def fitter(data):
    import keras

    from ekg_keras.training import Fitter

    keras.utils.set_random_seed(1)  # The same order for every model.
    return Fitter(
        (data.x_train, data.y_train),
        batch_size=64,
        learning_rate=0.01,
        weight_decay=5e-4,
        verbose=0,
    )


def test_accuracy(model, data):
    """Inference accuracy on the test split after recalibration; the
    model's weights are restored afterwards."""
    import ekg_keras

    weights = model.get_weights()
    ekg_keras.recalibrate_batchnorm(model, (data.x_train, data.y_train))
    result = accuracy(model, data)
    model.set_weights(weights)
    return result


def prune_and_finetune(name, model, flops, data, args):
    import ekg_keras
    from ekg_keras.training import finetuners

    method = create(name, model, flops, data, args)
    start = time.perf_counter()
    masked = method.run(fitter(data))
    search_seconds = time.perf_counter() - start
    full = ekg_keras.count_flops(model)
    pruned = ekg_keras.count_flops(masked)
    row = {
        "flops": pruned.macs / full.macs,
        "params": pruned.params,
        "search_s": search_seconds,
    }
    if method.trains_while_pruning:
        row["pruned"] = None
    else:
        row["pruned"] = test_accuracy(masked, data)
        start = time.perf_counter()
        finetuners.finetune(
            method, args.finetune_epochs, fitter(data), "cosine"
        )
        row["finetune_s"] = time.perf_counter() - start
    row["finetuned"] = test_accuracy(masked, data)
    if name == "lfpc":
        row["criteria"] = criteria_summary(method)
        row["criteria_names"] = list(method.options.criteria)
        if args.plot_dir:
            from ekg_keras.methods.lfpc import plot_criteria

            os.makedirs(args.plot_dir, exist_ok=True)
            plot_criteria(
                method, os.path.join(args.plot_dir, f"lfpc_{flops}.png")
            )
    return row


def criteria_summary(method):
    """How many groups chose each criterion, in each half of the network."""
    structure = method.structure
    half = len(structure.criteria) // 2
    summary = {}
    for name in method.options.criteria:
        summary[name] = {
            "groups": structure.criteria.count(name),
            "input_half": structure.criteria[:half].count(name),
            "output_half": structure.criteria[half:].count(name),
        }
    summary["per_group"] = [
        [method.setup.graph.groups[g].producers[0], name, int(count)]
        for g, name, count in zip(
            structure.group_ids,
            structure.criteria,
            structure.keep_counts[list(structure.group_ids)],
        )
    ]
    summary["search_epochs"] = len(method.history)
    summary["final_expected_flops"] = method.history[-1].expected_flops
    return summary


def print_target(flops, rows, unpruned):
    table = []
    for name, row in rows.items():
        pruned = "-" if row["pruned"] is None else f"{row['pruned']:.2%}"
        table.append(
            [
                name,
                f"{row['flops']:.3f}",
                f"{row['params'] / 1e3:.1f}k",
                pruned,
                f"{row['finetuned']:.2%}",
                f"{row['search_s']:.1f}",
            ]
        )
    print(f"\nflops={flops} (unpruned test accuracy {unpruned:.2%})")
    print(
        _timing.table(
            [
                "method",
                "FLOPs kept",
                "params",
                "acc pruned",
                "acc fine-tuned",
                "search s",
            ],
            table,
        )
    )
    if "lfpc" in rows:
        summary = rows["lfpc"]["criteria"]
        parts = [
            f"{name} {s['groups']} ({s['input_half']} in the input half, "
            f"{s['output_half']} in the output half)"
            for name, s in summary.items()
            if name in rows["lfpc"]["criteria_names"]
        ]
        print("LFPC criteria per group: " + "; ".join(parts))


def main(argv=None):
    args = parse_args(argv)

    import ekg_keras

    env = _timing.environment()
    print(_timing.environment_line(env))
    before = _timing.cpu_snapshot()
    data = ekg_keras.data.digits(batch_size=64, image_size=args.image_size)
    start = time.perf_counter()
    model = train("resnet20", data, args.pretrain_epochs)
    unpruned = test_accuracy(model, data)
    print(
        f"ResNet-20 at {args.image_size}x{args.image_size}: "
        f"{args.pretrain_epochs} epochs, test accuracy {unpruned:.2%} "
        f"({time.perf_counter() - start:.0f} s)"
    )
    results = {"environment": env, "args": vars(args), "targets": {}}
    for flops in args.targets:
        rows = {}
        for name in args.methods:
            start = time.perf_counter()
            rows[name] = prune_and_finetune(name, model, flops, data, args)
            print(
                f"  flops={flops} {name}: done in "
                f"{time.perf_counter() - start:.0f} s",
                flush=True,
            )
        print_target(flops, rows, unpruned)
        results["targets"][str(flops)] = rows
    own, other = _timing.other_load(before, _timing.cpu_snapshot())
    results["cpu"] = {"own_cores": own, "other_cores": other}
    warning = _timing.load_warning(
        [other], env["cpu_count"], "the wall times are slower than idle."
    )
    print(
        f"\nthis process used {own:.2f} cores on average"
        + (f", other processes {other:.2f}" if other is not None else "")
    )
    if warning:
        print(warning)
    _timing.write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
