"""Typed schema of conf/: a misspelled key or a wrongly typed value fails at composition."""

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

from pipeline.bounds import bounded, check_values, checked, frequency_check, season_check, time_format_check
from pipeline.errors import ConfigError

# conf/, beside the package: found the same way whether a stage runs as `python -m pipeline.train` or as the
# `pipeline-train` command (Hydra would look for a Python package `conf` there).
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


class Missing(str, Enum):
    error = "error"
    interpolate = "interpolate"
    ffill = "ffill"
    zero = "zero"


class Gaps(str, Enum):
    error = "error"
    fill = "fill"


class ShortSeries(str, Enum):
    error = "error"
    drop = "drop"
    pad = "pad"


class Scaling(str, Enum):
    standard = "standard"
    robust = "robust"
    minmax = "minmax"
    none = "none"


class Transform(str, Enum):
    none = "none"
    log1p = "log1p"


class Cell(str, Enum):
    rnn = "rnn"
    lstm = "lstm"
    gru = "gru"


class Nonlinearity(str, Enum):
    tanh = "tanh"
    relu = "relu"


class Activation(str, Enum):
    relu = "relu"
    gelu = "gelu"
    tanh = "tanh"


class Likelihood(str, Enum):
    normal = "normal"
    student_t = "student_t"
    negative_binomial = "negative_binomial"


class Loss(str, Enum):
    mse = "mse"
    mae = "mae"
    huber = "huber"


class ClipAlgorithm(str, Enum):
    norm = "norm"
    value = "value"


class Strategy(str, Enum):
    direct = "direct"
    recursive = "recursive"
    seq2seq = "seq2seq"


class AttentionScore(str, Enum):
    dot = "dot"
    additive = "additive"


class InitState(str, Enum):
    zeros = "zeros"
    learned = "learned"


class StaticInto(str, Enum):
    head = "head"     # beside the series embedding, read by the head at every step it forecasts
    state = "state"   # mapped to the encoder's initial state (each layer's, in place of model.init_state)
    input = "input"   # appended to every row the encoder reads


def as_list(value: Any) -> list:
    """A key written as one value or a list of them, as a list: [] for null."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]


@dataclass
class DataConfig:
    # The series file (CSV, optionally compressed, or Parquet, by extension), or a folder of Parquet files.
    path: str = "data/vic_elec.parquet"
    time_column: str = "time"  # the file's column of timestamps
    target_column: str = "demand"  # the column to forecast
    # null: the file holds one series; a column name, or a list of columns that together name a series. A list
    # from composition on ([] for null): nothing downstream normalises it again.
    id_column: Any = None
    # strftime format of the time column, when pandas cannot guess it.
    time_format: Optional[str] = checked(None, time_format_check)
    # The zone of times written without a UTC offset (an IANA name: Australia/Melbourne, UTC); they are then
    # converted to UTC like times with offsets. null: such times are wall-clock times without a zone.
    time_zone: Optional[str] = None
    # Static covariates (pipeline/data/static.py): true makes every id column a categorical attribute of its
    # series, a list those id columns; false none.
    static_from_ids: Any = False
    # A CSV or Parquet file of attributes: the id columns and one row per series; text columns are categorical,
    # numeric ones numbers. null: none.
    static: Optional[str] = None
    # Past-observed inputs: known up to the forecast origin only, scaled like the target.
    covariates: list[str] = field(default_factory=list)
    # Known-future inputs (holiday flags, planned prices): read over the lookback and the horizon alike.
    future_covariates: list[str] = field(default_factory=list)
    # As-of honesty for known-future inputs that are themselves forecasts (pipeline/data/vintages.py): a file of
    # every issued value (ids, time, this issue-time column, the columns); each window's horizon then reads the values
    # issued by its origin. null: the main file's values are taken as known in advance.
    vintages: Optional[str] = None
    future_covariates_known_at: Optional[str] = None  # data.vintages' column of issue times
    # Cyclic calendar features of each timestamp (known in the future too).
    calendar: bool = True
    # Pandas offset alias ("30min", "h", "D", "MS"); null infers it from the timestamps.
    freq: Optional[str] = checked(None, frequency_check)
    # Seasonal periods in steps (an int or a list): seasonal naive is reported for each, and the strongest on each
    # block stands beside the model; MASE and model.seasonal_skip use the shortest. null derives them from the
    # frequency: a day and a week for sub-daily data, else one cycle (7 daily, 12 monthly, 4 quarterly).
    season: Any = checked(None, season_check)
    # Missing values (empty cells, or rows added by gaps=fill): error | interpolate | ffill | zero.
    missing: Missing = Missing.error
    # Steps absent from a series' regular grid: error | fill (with NaN rows, then the missing policy).
    gaps: Gaps = Gaps.error
    # Series too short for lookback + horizon + held-out blocks: error | drop | pad (left-pad, packed).
    short_series: ShortSeries = ShortSeries.error
    # Per-series scaling fitted on training rows: standard | robust | minmax | none.
    scaler: Scaling = Scaling.standard
    # The target before scaling: none | log1p (log(1 + y), for series >= 0 whose swings grow with their level;
    # forecasts come back through exp(.) - 1).
    transform: Transform = Transform.none

    def __post_init__(self) -> None:
        # One name or a list in YAML and in models saved before 2026-12; one form from here on.
        self.id_column = [str(c) for c in as_list(self.id_column)]
        self.season = as_list(self.season)


@dataclass
class WindowConfig:
    # Steps read before each origin. null: from the data's frequency (pipeline/data/defaults.py), a week of
    # half-hours (336) on the default data, 28 days of daily data, two years of weekly, monthly or quarterly data.
    lookback: Optional[int] = bounded(None, low=1)
    # Steps forecast from each origin. null: from the frequency, a day of half-hours (48) on the default data.
    horizon: Optional[int] = bounded(None, low=1)
    # Steps between the starts of consecutive training windows.
    stride: int = bounded(1, low=1)
    # Windows a training step reads (for each member of an ensemble); the default experiment sets 96.
    batch_size: int = bounded(256, low=1)


@dataclass
class SplitConfig:
    # The last steps of every series, by time: test is the very end, validation just before it. null: whole
    # horizons from the frequency (28 days of half-hours each on the default data), fewer when the shortest series
    # cannot hold them (pipeline/data/defaults.py).
    val_steps: Optional[int] = bounded(None, low=0)
    test_steps: Optional[int] = bounded(None, low=0)  # the test block: never read to choose anything


@dataclass
class ModelConfig:
    """The network (pipeline/model/network.py); model=rnn|lstm|gru sets the cell."""

    cell: Cell = Cell.lstm  # set by model=rnn|lstm|gru
    # One width for every layer, or a list with one width per layer (its length must equal num_layers).
    hidden_size: Any = bounded(64, low=1)
    num_layers: int = bounded(2, low=1)  # stacked recurrent layers
    # direct: all steps from the encoder's final state | recursive: a one-step model rolled forward |
    # seq2seq: a decoder unrolled over the horizon.
    strategy: Strategy = Strategy.direct
    # seq2seq only: each decoder step attends over every encoder state, scored by dot product or additively.
    attention: bool = False
    attention_score: AttentionScore = AttentionScore.dot  # dot (Luong, general) or additive (Bahdanau)
    # recursive and seq2seq: the share of rolled steps fed the true previous value during training
    # (1.0: pure teacher forcing, a one-step model; 0.0: always its own predictions).
    teacher_forcing: float = bounded(0.5, low=0, high=1)
    # Hidden widths of an MLP output head; [] is one linear map.
    head_layers: list[int] = bounded([], low=1)
    head_activation: Activation = Activation.relu  # between the head's hidden layers
    head_dropout: float = bounded(0.0, low=0, high=1, high_open=True)  # after each hidden layer of the head
    # Initial hidden state of the encoder: zeros, or learned per layer and direction.
    init_state: InitState = InitState.zeros
    # Train with the pinball loss and forecast these quantiles (e.g. [0.1, 0.5, 0.9]); [] forecasts a point.
    # With model.likelihood: the levels it forecasts ([]: 0.025, 0.1, 0.5, 0.9, 0.975).
    quantiles: list[float] = bounded([], low=0, high=1, low_open=True, high_open=True)
    # Output a distribution per horizon step, trained by its negative log-likelihood on the scaled target:
    # normal or student_t (location, scale, degrees of freedom >= 3), or for counts negative_binomial (mean and
    # dispersion, scaled by each window's level as DeepAR; needs data.scaler=none); null trains model.quantiles
    # or a point.
    likelihood: Optional[Likelihood] = None
    # With quantiles: widen (or narrow) each central interval after training so that it covers its nominal
    # share of the validation block (conformalized quantile regression).
    conformal: bool = True
    # The encoder reads the lookback both ways (decoders stay causal); such a model cannot stream.
    bidirectional: bool = False
    dropout: float = bounded(0.0, low=0, high=1, high_open=True)  # between stacked layers
    # Vanilla RNN only.
    nonlinearity: Nonlinearity = Nonlinearity.tanh
    # Predict a correction to the seasonal-naive forecast read from the input window.
    seasonal_skip: bool = True
    # The period it reads; null: the shortest of data.season (reading the period whose seasonal naive won on
    # validation lost there: bench/ACCURACY.md, "Round two").
    skip_season: Optional[int] = bounded(None, low=1)
    # Per-window normalisation (RevIN): each window's target is centred and scaled by its own mean and
    # standard deviation before the network reads it, and the forecast is mapped back. Chosen on the validation
    # block of the default data (val MASE 0.506, 0.500 over seeds 0, 1 against 0.498, 0.553 without). Such a
    # model cannot stream (pipeline/inference/streaming.py): set false for that.
    window_norm: bool = True
    # Size of a learned embedding of the series id fed to the head; 0 turns it off.
    series_embedding: int = bounded(0, low=0)
    # Size of the learned embedding of each categorical static attribute (data.static_from_ids, data.static).
    static_embedding: int = bounded(4, low=1)
    # Where the static attributes enter the network: the head (beside the series embedding), the encoder's initial
    # state, or every row the encoder reads. The initial state won on tourism's gap validation: MASE 1.0506 over
    # seeds 0-2, against 1.0552 in the head and 1.0565 in every row (bench/ACCURACY.md, "Static covariates").
    static_into: StaticInto = StaticInto.state
    # Read the lookback as non-overlapping segments of this many steps, each embedded by a linear map (SegRNN):
    # 336 steps become 28 recurrent steps of 12, 11x faster steps on CPU, but worse on the validation block of
    # the default data than step by step (bench/ACCURACY.md). null reads step by step.
    segment_len: Optional[int] = bounded(None, low=1)
    # Train this many networks of this configuration side by side (different initial weights, each on its own
    # batches and its own loss) and forecast their mean: one logged model, `ensemble` times the training cost.
    ensemble: int = bounded(1, low=1)


@dataclass
class OptimConfig:
    # Training and validation loss on the scaled target (MAE: chosen on the default data's validation block).
    loss: Loss = Loss.mae
    lr: float = bounded(3e-3, low=0, low_open=True)  # AdamW's learning rate
    weight_decay: float = bounded(0.0, low=0)  # AdamW's decoupled weight decay
    # Cosine decay to zero over the planned steps (needs trainer.max_steps or max_epochs).
    cosine_schedule: bool = True
    # Stop when the validation loss has not improved for this many validations; null trains the whole budget.
    patience: Optional[int] = bounded(None, low=1)
    # Batches whose loss or gradient is not finite that may be skipped (no update) before training stops;
    # 0 stops at the first.
    skip_nonfinite: int = bounded(0, low=0)


@dataclass
class TrainerConfig:
    """Lightning Trainer arguments; add any other one with ++trainer.NAME=VALUE."""

    # auto: a GPU when there is one.
    accelerator: str = "auto"
    devices: Any = "auto"  # how many (or which) devices; auto: one
    # auto: one process, or Lightning's choice for several devices; ddp (trainer=ddp) for data parallel.
    strategy: str = "auto"
    num_nodes: int = bounded(1, low=1)  # machines of a distributed training
    # auto: bf16-mixed for an LSTM on a CPU with native bfloat16 (AVX-512 BF16/AMX), 32-true otherwise
    # (pipeline.training.precision); the log and the run's `precision` tag say what it resolved to and why. Any
    # Lightning value overrides it; bf16 on a CPU without native bfloat16 is refused.
    precision: Any = "auto"
    max_epochs: Optional[int] = bounded(None, low=1, also=(-1,))  # a budget in epochs instead of steps
    # The default recipe takes ~0.1 s a step on 2 CPU cores, in bf16 or float32: about a minute in all.
    max_steps: int = bounded(600, low=1, also=(-1,))
    # Gradients clipped by Lightning before each update, to this norm (or value); null: not clipped.
    gradient_clip_val: Optional[float] = bounded(1.0, low=0)
    gradient_clip_algorithm: ClipAlgorithm = ClipAlgorithm.norm  # norm (the total norm) or value (each element)
    log_every_n_steps: int = bounded(50, low=1)  # train_loss and grad_norm to MLflow every this many steps
    # Validate every 100 optimizer steps (not per epoch), so the best checkpoint is picked often enough.
    val_check_interval: Any = bounded(100, low=1, share=True)
    check_val_every_n_epoch: Optional[int] = bounded(None, low=1)  # validate per epoch instead
    limit_train_batches: Any = bounded(None, low=1, share=True)  # batches (or share of them) an epoch reads
    # null: Lightning's progress bar (with the training loss) when stderr is a terminal, else one log line per
    # validation (what a cron log wants).
    enable_progress_bar: Optional[bool] = None
    enable_model_summary: bool = False  # Lightning's table of the network's layers, at the start
    deterministic: Any = False  # torch's deterministic algorithms (slower; the CPU path is already repeatable)


@dataclass
class TrackingConfig:
    # Default: a local sqlite store under outputs/, browsed with `mlflow ui --backend-store-uri ...`.
    uri: str = "sqlite:///outputs/mlflow.db"
    experiment: str = "pipeline"  # the MLflow experiment, created if needed
    # Where new experiments keep artifacts; null puts them beside a sqlite/file store.
    artifact_location: Optional[str] = None
    # Log the trained model as an MLflow pyfunc model (with input example and signature).
    log_model: bool = True
    # A tracking server that does not answer: retries of `timeout` seconds each (with 1, 2, 4 ... s between
    # them), then the stage fails in one line, or with offline_fallback records into offline_uri instead.
    retries: int = bounded(2, low=0)
    timeout: int = bounded(10, low=1)  # seconds each try may take
    # Once a run is open, how long the server may be away (a restart) before a request gives up: requests are
    # retried meanwhile, so training pauses rather than fails. At most 480.
    outage_seconds: int = bounded(120, low=0, high=480)
    offline_fallback: bool = False  # record into offline_uri when tracking.uri does not answer
    offline_uri: str = "sqlite:///outputs/mlflow-offline.db"  # where offline_fallback records


@dataclass
class SearchConfig:
    """conf/hparams_search/: an Optuna search over config keys against the validation loss
    (pipeline/training/search.py)."""

    # Trainings to run, one after another; each is an MLflow run of its own.
    n_trials: int = bounded(20, low=1)
    # Config key -> range, in Hydra's sweep syntax: choice(32, 64), range(1, 4), interval(0.0, 0.3),
    # tag(log, interval(1e-4, 1e-2)).
    params: dict[str, str] = field(default_factory=dict)
    # The Optuna storage the study lives in (e.g. sqlite:///outputs/search.db); null: optuna.db in the run
    # folder. Run the command again with the same storage and the search resumes where it stopped.
    storage: Optional[str] = None
    study_name: str = "search"  # the Optuna study in that storage


@dataclass
class AutoConfig:
    """conf/experiment/auto.yaml: the recipe chosen on the user's own validation block (pipeline/training/auto.py)."""

    # Wall-clock minutes for the whole choice and the final training; the choice stops early to keep them.
    budget_minutes: float = bounded(10.0, low=0, low_open=True)
    # Successive halving: a third of the recipes (1 / eta) go on to each next round, at eta times the steps.
    eta: int = bounded(3, low=2)
    # Recipe name -> config overrides (key: value; window.lookback_factor: k reads k times the lookback).
    recipes: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = bounded(0, low=0, high=2**32 - 1)  # torch, numpy, Python and the window shuffling
    # torch's compute threads. null: the cores free when the stage starts (OMP_NUM_THREADS wins when set), and in
    # training again every 25 steps, so that jobs sharing the cores step aside for each other.
    threads: Optional[int] = bounded(None, low=1)
    # A training run id, or `last`, to continue from its last checkpoint (pipeline/training/resume.py).
    resume: Optional[str] = None
    # null trains once; hparams_search=optuna searches (pipeline/training/search.py).
    hparams_search: Optional[SearchConfig] = None
    # null trains the recipe given; experiment=auto chooses one on the data (pipeline/training/auto.py).
    auto: Optional[AutoConfig] = None


class ExportFormat(str, Enum):
    onnx = "onnx"
    torchscript = "torchscript"


@dataclass
class ExportConfig:
    """conf/export.yaml: which tracked model, which format."""

    # The training run whose model to export, or any MLflow model URI (models:/NAME@champion, runs:/ID/model).
    run_id: Optional[str] = None
    model_uri: Optional[str] = None  # instead of run_id
    # onnx (runs on onnxruntime) | torchscript (runs on torch.jit alone).
    format: ExportFormat = ExportFormat.onnx
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


@dataclass
class ForecastDataConfig:
    # The new data; its columns, frequency and policies are the model's, never the current conf/.
    path: Optional[str] = None
    # The zone of its times written without a UTC offset; null: the model's data.time_zone.
    time_zone: Optional[str] = None


class Engine(str, Enum):
    local = "local"  # this process, one file after another
    dask = "dask"    # a Dask cluster, one task per file (pipeline/inference/folder.py)


@dataclass
class DaskConfig:
    # A running scheduler (tcp://HOST:8786), whose workers can reach the tracking server and the data and output
    # folders; null: a cluster of `workers` processes on this machine, for this job only.
    address: Optional[str] = None
    workers: int = bounded(2, low=1)  # processes of the local cluster
    threads_per_worker: int = bounded(1, low=1)  # threads of each


@dataclass
class ForecastConfig:
    """conf/forecast.yaml: which model, which new data, where the forecast goes."""

    # Any MLflow model URI: models:/NAME@champion, models:/NAME/3, runs:/RUN_ID/model.
    model_uri: Optional[str] = None
    data: ForecastDataConfig = field(default_factory=ForecastDataConfig)
    # One file, CSV (optionally compressed) or Parquet by extension, written atomically. For a data.path that is a
    # folder of Parquet files: a folder, which gets one Parquet file of forecasts per input file.
    output: Optional[str] = None
    # What forecasts a folder of Parquet files: this process, or a Dask cluster (pip install 'pipeline[dask]').
    engine: Engine = Engine.local
    dask: DaskConfig = field(default_factory=DaskConfig)
    # torch's compute threads (engine=local). null: the cores free when the stage starts (OMP_NUM_THREADS wins).
    threads: Optional[int] = bounded(None, low=1)
    # A model.likelihood model only: write this many sample paths per series instead of quantiles, one row per
    # (series, sample, step) with a `sample` column (recursive and seq2seq paths are coherent across the horizon;
    # a direct head draws each step on its own). 0: the forecast and its quantiles.
    samples: int = bounded(0, low=0)
    # The paths' random seed: the same seed draws the same paths (a folder's files: each a seed from this and its name).
    seed: int = 0
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


@dataclass
class BacktestConfig:
    # Origins per series, counted back from the end of the file; fewer where a series is too short.
    origins: int = bounded(28, low=1)
    # Steps between consecutive origins; null: the model's horizon (forecasts that do not overlap).
    step: Optional[int] = bounded(None, low=1)


@dataclass
class EvaluateConfig:
    """conf/evaluate.yaml: which tracked model, on which file, from which origins."""

    # The training run whose model to evaluate, or instead any MLflow model URI (models:/NAME@champion).
    run_id: Optional[str] = None
    model_uri: Optional[str] = None  # instead of run_id
    # null: the file the model was trained on (its columns and policies are always the model's).
    data: ForecastDataConfig = field(default_factory=ForecastDataConfig)
    evaluate: BacktestConfig = field(default_factory=BacktestConfig)
    # torch's compute threads. null: the cores free when the stage starts (OMP_NUM_THREADS wins when set).
    threads: Optional[int] = bounded(None, low=1)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


@dataclass
class RegisterConfig:
    """conf/register.yaml: which training run goes into which registered model."""

    run_id: Optional[str] = None  # the training run whose model to register
    name: Optional[str] = None  # the registered model's name (created if new)
    # Move the champion alias to the new version even when it does not beat the current champion.
    force: bool = False
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


@dataclass
class ServeConfig:
    """conf/serve.yaml: which model, on which address, and how large a request may be."""

    # Any MLflow model URI: models:/NAME@champion, models:/NAME/3, runs:/RUN_ID/model.
    model_uri: Optional[str] = None
    host: str = "127.0.0.1"  # the interface to listen on: 0.0.0.0 for every one (behind a TLS proxy)
    port: int = bounded(5001, low=1, high=65535)  # where /invocations, /ping and /health answer
    # Larger requests are answered 413 unread: a day of half-hours for 10^4 series is about 10 MB of JSON.
    max_request_bytes: int = bounded(16_000_000, low=1)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def register_configs() -> None:
    """Make the schemas the base of each stage's config file, so Hydra type-checks every key."""
    ConfigStore.instance().store(name="config_schema", node=Config)
    ConfigStore.instance().store(name="export_schema", node=ExportConfig)
    ConfigStore.instance().store(name="forecast_schema", node=ForecastConfig)
    ConfigStore.instance().store(name="register_schema", node=RegisterConfig)
    ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)
    ConfigStore.instance().store(name="serve_schema", node=ServeConfig)


def to_config(cfg: DictConfig) -> Config:
    """Turn a composed DictConfig into plain dataclasses; extra trainer keys stay as a dict."""
    unknown = unknown_keys(cfg)
    if unknown:
        # Hydra lets `+key=value` add keys the schema lacks; nothing here would read them.
        raise ConfigError(f"{unknown[0]} is not a config key; check its spelling (Lightning Trainer arguments "
                          f"go in with ++trainer.NAME=VALUE)")
    config = OmegaConf.to_object(cfg)
    assert isinstance(config, (Config, ExportConfig, ForecastConfig, RegisterConfig, EvaluateConfig, ServeConfig))
    check_values(config)
    return config  # type: ignore[return-value]


def unknown_keys(node: DictConfig, path: str = "") -> list[str]:
    """Keys of typed nodes that their dataclass does not declare (trainer: takes any Trainer argument)."""
    kind = OmegaConf.get_type(node)
    known = {f.name for f in dataclasses.fields(kind)} if dataclasses.is_dataclass(kind) else None
    found = []
    for key in node.keys():
        name = f"{path}{key}"
        if known is not None and key not in known:
            found.append(name)
        elif name != "trainer" and OmegaConf.is_dict(node._get_node(key)) and node[key] is not None:
            found += unknown_keys(node[key], f"{name}.")
    return found


def trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """Every key under trainer:, including ones added with ++, as Trainer keyword arguments."""
    return OmegaConf.to_container(cfg.trainer, resolve=True, enum_to_str=True)  # type: ignore[return-value]


def plain(config: Any) -> dict[str, Any]:
    """A config dataclass as plain values (enums as their values): what checkpoints and specs store, since
    loading them with weights_only admits no Enum."""
    return {key: getattr(value, "value", value) for key, value in dataclasses.asdict(config).items()}


register_configs()
