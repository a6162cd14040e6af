"""Whether `latency=0.5` is reachable for ResNet-56, by measurement.

Builds ResNet-56 (32x32, random weights: timing does not depend on the
weights' values) and, per `round_to`:

* the latency model's *predicted* floor: the fraction of the original's
  latency of the network with every group at its floor width (the
  `PruningSetup` at `latency=1.0`, which times nothing but the tables and
  the calibration, cached in the latency cache file);
* the *measured* floor, `--repeats` times: the floor network and the
  original timed against each other in interleaved rounds
  (`ekg_keras.latency.reachability.time_floor`), with the 1-minute load
  average at each;
* `prune(latency=0.5)` (one-shot, through the method so that its measured
  fraction is read): refused with the one-line message, or the budget it
  used and the fraction it measured.

The machine's load is printed (cores other processes used while timing):
figures taken under load are noisy, and both sides of every fraction are
timed in the same rounds so that a load shift touches them alike.

    .venv/bin/python benchmarks/latency_reachability.py
    .venv/bin/python benchmarks/latency_reachability.py --round-to 1,8
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing  # Silences TF logging before TF is imported.

GOAL = 0.5


def parse(argv):
    parser = _timing.base_parser(
        __doc__.splitlines()[0], "one repeat of the floor timing"
    )
    parser.add_argument("--round-to", default="8", help="comma-separated")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--runtime", default="tf")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency", type=float, default=GOAL)
    parser.add_argument(
        "--cache", default=None, help="latency cache file (default: shared)"
    )
    return parser.parse_args(argv)


def one_round_to(round_to, args):
    import ekg_keras
    from ekg_keras import methods
    from ekg_keras.latency import reachability
    from ekg_keras.methods.setup import PruningSetup

    scope = dict(
        round_to=round_to,
        latency_batch_size=args.batch_size,
        runtime=args.runtime,
        latency_cache=args.cache,
    )
    model = ekg_keras.models.resnet56()
    setup = PruningSetup(model, None, latency=1.0, **scope)
    predicted = setup.smallest_fraction()
    floors = []
    for _ in range(1 if args.quick else args.repeats):
        timing = reachability.time_floor(
            setup.counter, setup.levels.lowest, verbose=0
        )
        floors.append(timing)
        print(
            f"round_to={round_to}: floor predicted {timing.predicted:.3f}, "
            f"measured {timing.measured:.3f} ({timing.conditions()})",
            flush=True,
        )
    result = {
        "round_to": round_to,
        "predicted_floor": predicted,
        "measured_floors": [t.measured for t in floors],
        "loads": [t.load for t in floors],
    }
    try:
        method = methods.get("oneshot").create(
            model, None, verbose=1, latency=args.latency, **scope
        )
    except ValueError as error:
        print(f"round_to={round_to}: refused: {error}", flush=True)
        result.update(reached=False, refusal=str(error))
        return result
    method.run()
    timing = method.setup.floor_timing
    result.update(
        reached=method.measured_latency <= args.latency,
        measured=method.measured_latency,
        budgeted=method.setup.target,
        setup_floor=None if timing is None else timing.measured,
    )
    print(
        f"round_to={round_to}: latency={args.latency} pruned, measured "
        f"{method.measured_latency:.3f} (predicted budget "
        f"{method.setup.target:.3f})",
        flush=True,
    )
    return result


def main(argv=None):
    args = parse(argv)
    env = _timing.environment()
    print(_timing.environment_line(env), flush=True)
    before = _timing.cpu_snapshot()
    rows = [one_round_to(int(r), args) for r in args.round_to.split(",")]
    own, others = _timing.other_load(before, _timing.cpu_snapshot())
    print(
        f"\nResNet-56 32x32, batch {args.batch_size}, {args.runtime}: "
        f"latency={args.latency}"
    )
    print(
        _timing.table(
            [
                "round_to",
                "floor predicted",
                "floor measured",
                "1-min load",
                f"latency={args.latency}",
            ],
            [
                [
                    r["round_to"],
                    f"{r['predicted_floor']:.3f}",
                    " ".join(f"{m:.3f}" for m in r["measured_floors"]),
                    " ".join(f"{v:.2f}" for v in r["loads"] if v is not None),
                    f"measured {r['measured']:.3f}"
                    if "measured" in r
                    else "refused",
                ]
                for r in rows
            ],
        )
    )
    others_line = "unknown" if others is None else f"{others:.2f}"
    print(
        f"cores own/others while timing: {own:.2f}/{others_line} of "
        f"{env['cpu_count']}"
    )
    warning = _timing.load_warning(
        [others], env["cpu_count"], "fractions are noisy"
    )
    if warning:
        print(warning)
    result = {"environment": env, "rows": rows, "other_cores": others}
    _timing.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
