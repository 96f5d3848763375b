"""`python -m pipeline` (or the `pipeline` command): the stages, and `pipeline STAGE OVERRIDES...` runs one,
exactly as `python -m pipeline.STAGE OVERRIDES...` or the `pipeline-STAGE` command does."""

import importlib
import sys

STAGES = {
    "train": "train a forecaster on a series file; log it to MLflow",
    "evaluate": "backtest a tracked model on any file, beside naive and seasonal naive",
    "forecast": "forecast new data with a saved model (what scheduled jobs run)",
    "register": "register a training run's model; move the champion alias if it is better",
    "export": "export a tracked model to ONNX or TorchScript",
    "serve": "serve a model over HTTP (MLflow's scoring server), once its files match their digests",
}


def usage() -> str:
    lines = ["usage: pipeline STAGE [OVERRIDES...]   (STAGE --help: its config keys)", "", "stages:"]
    return "\n".join(lines + [f"  {name:<9} {what}" for name, what in STAGES.items()])


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return
    if args[0] not in STAGES:
        print(f"pipeline: no stage {args[0]!r}; one of {', '.join(STAGES)}", file=sys.stderr)
        sys.exit(2)
    # Hydra reads the overrides from sys.argv, as it would for pipeline-STAGE.
    sys.argv = [f"pipeline-{args[0]}", *args[1:]]
    importlib.import_module(f"pipeline.{args[0]}").main()


if __name__ == "__main__":
    main()
