"""experiment=auto: the recipe chosen on the user's own data, within a time budget, never on the test block.

    python -m pipeline.train experiment=auto data.path=sales.csv data.time_column=date data.target_column=units

Every recipe of `auto.recipes` (each won on one of the shipped data sets) is trained on the file without its test
block, as an MLflow run nested under one parent run, and scored by its test MASE there: the user's validation
block, forecast as the real test block will be, by a model whose own validation block (early stopping, the best
checkpoint) lies before it. Successive halving (Jamieson and Talwalkar, 2016), ending at full length: with R rounds,
round k trains every recipe still in for 1 / eta^(R-k) of its own trainer.max_steps, and the best 1 / eta of them go
on, so the last round compares the survivors trained as they would be for real (ranks after a share of the steps
are not ranks at the end: on vic_elec a 3000-step recipe led the 600-step default after a third of each, and lost
once both were trained in full). Before each training, the time it and the final training would take at the
recipe's own pace is checked against auto.budget_minutes; a recipe the budget cannot hold sits the round out and
the next in rank takes its place, and the best of the last round trained wins. The winner is then trained on all the training data, nested under the
parent too; the parent run records every score, the winner, its margin over the runner-up and what sat out.
"""

import copy
import json
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from pipeline.config import AutoConfig, to_config
from pipeline.data.defaults import record_lengths, resolve_windowing
from pipeline.data.holdout import without_test_block
from pipeline.data.load import load_series
from pipeline.errors import ConfigError, DataError, TrainingDiverged, first_line
from pipeline.tracking.run_lifetime import ending
from pipeline.tracking.store import experiment_id

log = logging.getLogger(__name__)

Train = Callable[[DictConfig, Path, dict[str, str]], dict]


@dataclass
class Score:
    recipe: str
    round: int
    steps: int
    mase: float
    seconds: float
    run_id: str


def recipe_config(cfg: DictConfig, overrides: dict[str, Any], lookback: int) -> DictConfig:
    """The command's config with one recipe's overrides, and no choice of its own."""
    recipe = copy.deepcopy(cfg)
    for key, value in overrides.items():
        if key == "window.lookback_factor":
            key, value = "window.lookback", int(value) * lookback
        try:
            OmegaConf.update(recipe, key, value, merge=False)
        except Exception as error:  # OmegaConf's errors for a key the schema lacks
            raise ConfigError(f"auto.recipes: {key}: {first_line(error)}; name a config key such as "
                              f"model.segment_len") from error
    recipe.auto = None
    return recipe


def choose_recipe(cfg: DictConfig, auto: AutoConfig, output_dir: Path, run_tags: dict[str, str],
                  train: Train) -> dict:
    """Choose among auto.recipes on the validation block, train the winner on all the training data; its summary,
    with the choice under "auto"."""
    if not auto.recipes:
        raise ConfigError("experiment=auto needs auto.recipes: name at least one recipe")
    started = time.monotonic()
    config = to_config(cfg)
    if Path(config.data.path).is_dir():
        raise ConfigError(f"experiment=auto reads one data file, not a folder ({config.data.path})")
    series = load_series(config.data)
    window, split = resolve_windowing(config.window, config.split, series)
    base = copy.deepcopy(cfg)
    record_lengths(base, window, split)
    # The choice sees the file without its test block: its own test block is then the user's validation block.
    held_out = without_test_block(config.data, series, split.test_steps, output_dir / "choice")
    choice = copy.deepcopy(base)
    OmegaConf.update(choice, "data.path", str(held_out))
    OmegaConf.update(choice, "split.test_steps", split.val_steps)
    # A series the shorter file leaves too short to hold a window and both blocks cannot be scored: the choice goes
    # without it; the final training keeps data.short_series as given.
    OmegaConf.update(choice, "data.short_series", "drop")
    for overrides in auto.recipes.values():  # a misspelt key fails before anything trains
        recipe_config(choice, dict(overrides), window.lookback)
    client, parent = parent_run(config, auto, run_tags)
    tags = run_tags | {"mlflow.parentRunId": parent}
    try:
        scores, left_out = halve(choice, auto, window.lookback, started, output_dir, tags, train)
        winner, margin = verdict(scores)
        log.info("experiment=auto: %s won on the validation block (MASE %.4f; %s); training it on all the "
                 "training data", winner.recipe, winner.mase, margin)
        final = recipe_config(base, dict(auto.recipes[winner.recipe]), window.lookback)
        summary = train(final, output_dir / "final", tags | {"mlflow.runName": f"auto winner: {winner.recipe}",
                                                             "auto.winner": winner.recipe})
    except BaseException as error:
        client.set_terminated(parent, ending(error)[0])
        raise
    record(client, parent, scores, winner, margin, left_out, summary, time.monotonic() - started, output_dir)
    return summary | {"auto": {"winner": winner.recipe, "val_mase": winner.mase, "margin": margin,
                               "left_out": left_out, "parent_run_id": parent, "minutes": round((time.monotonic() - started) / 60, 2)}}


def halve(choice: DictConfig, auto: AutoConfig, lookback: int, started: float, output_dir: Path,
          tags: dict[str, str], train: Train) -> tuple[list[Score], list[str]]:
    """Successive halving over the recipes within the budget: every score in the order trained, and the recipes
    that sat a round out for the budget. A recipe trains 1 / eta^k of its own trainer.max_steps in each round
    (tourism's recipe is longer than the default), and all of them in the last. Each round takes the best 1 / eta
    of the round before that the budget can hold, going down its ranking past those it cannot."""
    budget = 60 * auto.budget_minutes
    ranked = list(auto.recipes)  # the order the next round takes recipes in: the last round's ranking
    slots = len(ranked)
    rounds = max(1, math.ceil(math.log(len(ranked), auto.eta)))
    scores: list[Score] = []
    failures: dict[str, str] = {}
    left_out: list[str] = []
    pace: dict[str, float] = {}  # seconds a step of each recipe took, to tell what the budget holds
    for number in range(rounds):
        this_round = []
        for name in ranked:
            if len(this_round) == slots:
                break
            recipe = recipe_config(choice, dict(auto.recipes[name]), lookback)
            full = int(recipe.trainer.max_steps)
            steps = max(1, full // auto.eta ** (rounds - 1 - number))
            # Room for this training and for the final one (the recipe's steps on all the data), at its own pace.
            needed = pace.get(name, max(pace.values(), default=0.0)) * (steps + full)
            if (scores or this_round) and time.monotonic() - started + needed > budget:  # one always trains
                log.info("experiment=auto: %s sits round %d out: %d steps and its final training (~%.0f s) would "
                         "overrun auto.budget_minutes=%s", name, number + 1, steps, needed, auto.budget_minutes)
                left_out.append(f"{name} (round {number + 1}, ~{needed:.0f} s)")
                continue  # the next in rank takes its place
            score = train_recipe(recipe, name, number, steps, output_dir, tags, train)
            if isinstance(score, str):
                failures[name] = score
                continue
            this_round.append(score)
            pace[name] = score.seconds / steps
        scores += this_round
        ranked = [s.recipe for s in sorted(this_round, key=lambda s: s.mase)]
        slots = math.ceil(len(this_round) / auto.eta)
        if slots <= 1:  # one left: it wins, and its final training follows
            break
    if not scores:
        name, why = next(iter(failures.items()), (None, None))
        raise ConfigError(f"experiment=auto: no recipe could train: {name}: {why}" if name else
                          "experiment=auto: no recipe trained within the budget; raise auto.budget_minutes")
    return scores, left_out


def train_recipe(recipe: DictConfig, name: str, number: int, steps: int, output_dir: Path, tags: dict[str, str],
                 train: Train) -> Score | str:
    """One recipe for `steps` steps on the file without its test block; its score, or why it cannot train."""
    recipe = copy.deepcopy(recipe)
    OmegaConf.update(recipe, "trainer.max_steps", steps)
    if isinstance(recipe.trainer.val_check_interval, int):  # a count of steps, not a share of an epoch
        OmegaConf.update(recipe, "trainer.val_check_interval", max(1, min(steps, recipe.trainer.val_check_interval)))
    folder = output_dir / "choice" / f"round_{number + 1}" / name.replace(" ", "_").replace(",", "")
    started = time.monotonic()
    try:
        summary = train(recipe, folder, tags | {"mlflow.runName": f"auto round {number + 1}: {name} ({steps} steps)",
                                                "auto.recipe": name, "auto.round": str(number + 1)})
    except (ConfigError, DataError, TrainingDiverged) as error:
        log.warning("experiment=auto: %s cannot train here: %s", name, first_line(error))
        return first_line(error)
    score = Score(name, number + 1, steps, summary["test"]["mase"], time.monotonic() - started, summary["run_id"])
    log.info("experiment=auto round %d: %s, %d steps: validation MASE %.4f", score.round, name, steps, score.mase)
    return score


def verdict(scores: list[Score]) -> tuple[Score, str]:
    """The best recipe of the last round trained, and by how much it beat the runner-up there (or, alone in it,
    how it stood in the round before, at fewer steps)."""
    last = max(s.round for s in scores)
    final = sorted((s for s in scores if s.round == last), key=lambda s: s.mase)
    if len(final) > 1:
        return final[0], f"{final[1].mase - final[0].mase:.4f} below {final[1].recipe} (round {last})"
    if last == 1:
        return final[0], "the only recipe trained"
    before = {s.recipe: s for s in scores if s.round == last - 1}
    others = sorted((s for s in before.values() if s.recipe != final[0].recipe), key=lambda s: s.mase)
    own = before[final[0].recipe].mase
    return final[0], (f"alone in round {last}; in round {last - 1}: {own:.4f} against {others[0].recipe}'s "
                      f"{others[0].mase:.4f}" if others else f"alone in round {last}")


def parent_run(config, auto: AutoConfig, run_tags: dict[str, str]) -> tuple[MlflowClient, str]:
    """The choice's own MLflow run, which every training of it is nested under."""
    client = MlflowClient(config.tracking.uri)
    mlflow.set_tracking_uri(config.tracking.uri)  # experiment_id looks the experiment up there
    run = client.create_run(experiment_id(config.tracking), run_name=f"auto {secrets.token_hex(2)}",
                            tags=run_tags | {"stage": "auto"})
    client.log_param(run.info.run_id, "auto.budget_minutes", auto.budget_minutes)
    client.log_param(run.info.run_id, "auto.recipes", json.dumps(auto.recipes))
    return client, run.info.run_id


def record(client: MlflowClient, parent: str, scores: list[Score], winner: Score, margin: str, left_out: list[str],
           summary: dict, seconds: float, output_dir: Path) -> None:
    """What the parent run says: every score, the winner, its margin, what the budget left out, the final run and
    the time it all took."""
    table = [s.__dict__ for s in scores]
    (output_dir / "auto.json").write_text(json.dumps(table, indent=1))
    client.log_artifact(parent, str(output_dir / "auto.json"))
    tags = {"auto.winner": winner.recipe, "auto.margin": margin, "auto.final_run_id": summary["run_id"],
            "auto.left_out": ", ".join(left_out) or "none",
            "mlflow.note.content": f"{winner.recipe} won on the validation block (MASE {winner.mase:.4f}; "
                                   f"{margin}); final run {summary['run_id']}"}
    for key, value in tags.items():
        client.set_tag(parent, key, value)
    client.log_metric(parent, "val_mase", winner.mase)
    client.log_metric(parent, "minutes", round(seconds / 60, 2))
    client.set_terminated(parent, "FINISHED")
