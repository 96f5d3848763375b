"""Every stage against a real MLflow tracking server over HTTP, as a team shares one, and jobs running at once."""

import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from mlflow.server import get_app_client
from mlflow.tracking import MlflowClient

from pipeline.config import RegisterConfig, TrackingConfig
from pipeline.register import register
from tests.helpers import SMALL, Store, free_port, run_stage, start_mlflow_server, start_stage

# Tests of one server share a pytest-xdist worker (make test: --dist loadgroup), so each server starts once.
SERVER, AUTH = pytest.mark.xdist_group("server"), pytest.mark.xdist_group("auth")


@pytest.mark.slow
@SERVER
def test_a_sweep_through_the_team_server_preset_records_every_run_on_the_server(server_store, tmp_path):
    sweep_dir = tmp_path / "sweep"
    done = run_stage("pipeline.train", "-m", "tracking=server", f"data.path={server_store.folder / 'train.parquet'}",
                     f"hydra.sweep.dir={sweep_dir}", *SMALL, "trainer.max_steps=6", "seed=0,1",
                     env={"MLFLOW_TRACKING_URI": server_store.uri})  # how the preset finds the server
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(server_store.uri)
    runs = client.search_runs([client.get_experiment_by_name("pipeline").experiment_id],
                              f"tags.sweep = '{sweep_dir.resolve()}'")
    assert len(runs) == 2 and {r.data.params["seed"] for r in runs} == {"0", "1"}
    for run in runs:
        assert run.info.status == "FINISHED" and "tracking.uri" not in run.data.params  # plumbing: config.yaml
        config = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))).read_text()
        assert f"uri: {server_store.uri}" in config
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # stored by the server, not beside us
        assert "forecasts.png" in {a.path for a in client.list_artifacts(run.info.run_id)}


@pytest.fixture(scope="module")
def trained(server_store) -> dict:
    return server_store.train()


# The server's sign-in (MLflow's basic-auth app): its admin, whose password the app takes at first start.
ADMIN, PASSWORD = "admin", "a-long-test-password"
CREDENTIALS = {"MLFLOW_TRACKING_USERNAME": ADMIN, "MLFLOW_TRACKING_PASSWORD": PASSWORD}


@pytest.fixture(scope="module")
def auth_store(tmp_path_factory, vic_elec, migrated_store):
    """A real `mlflow server --app-name basic-auth` on 127.0.0.1, as the README's shared-server recipe runs it,
    with the same data files as `store`; stopped after the module."""
    folder = tmp_path_factory.mktemp("auth")
    vic_elec.iloc[:1008].to_parquet(folder / "train.parquet", index=False)
    vic_elec.iloc[:1200].to_parquet(folder / "new.parquet", index=False)
    shutil.copy(migrated_store, folder / "server.db")
    (folder / "auth.ini").write_text(
        f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{folder / 'users.db'}\n"
        f"admin_username = {ADMIN}\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # Each request otherwise re-derives the password's PBKDF2 hash: a training's metric writes crawl.
        "auth_cache_ttl_seconds = 60\n")
    url = f"http://127.0.0.1:{free_port()}"
    server = start_mlflow_server(folder, url, "--app-name", "basic-auth", env={
        "MLFLOW_AUTH_CONFIG_PATH": str(folder / "auth.ini"), "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "a-test-secret"})
    try:
        yield Store(folder, url)
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
@AUTH
def test_train_register_and_forecast_through_a_server_with_sign_in_and_nothing_without_it(
        auth_store, tmp_path, monkeypatch):
    # With the credentials in the environment, as MLflow clients read them, every stage works.
    done = run_stage("pipeline.train", f"data.path={auth_store.folder / 'train.parquet'}", "tracking=server",
                     f"hydra.run.dir={tmp_path / 'train'}", *SMALL, env={"MLFLOW_TRACKING_URI": auth_store.uri}
                     | CREDENTIALS)
    assert done.returncode == 0, done.stderr[-3000:]
    trained = json.loads(done.stdout)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    decision = register(RegisterConfig(run_id=trained["run_id"], name="demand",
                                       tracking=TrackingConfig(uri=auth_store.uri)))
    assert decision["champion"]
    client = MlflowClient(auth_store.uri)
    run = client.get_run(trained["run_id"])
    assert PASSWORD not in json.dumps([run.data.params, run.data.tags])  # never logged
    location = client.get_logged_model(run.outputs.model_outputs[0].model_id).artifact_location
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")

    output = tmp_path / "forecast.csv"
    forecast = ["pipeline.forecast", "model_uri=models:/demand@champion", f"output={output}",
                f"data.path={auth_store.folder / 'new.parquet'}", f"tracking.uri={auth_store.uri}",
                f"hydra.run.dir={tmp_path / 'forecast'}"]
    done = run_stage(*forecast, env=CREDENTIALS)
    assert done.returncode == 0, done.stderr[-3000:]
    frame = pd.read_csv(output, parse_dates=["time"])
    last = pd.read_parquet(auth_store.folder / "new.parquet")["time"].max()
    assert len(frame) == 48 and frame["time"].iloc[0] == last + pd.Timedelta("30min")
    assert json.loads(done.stdout)["model_run_id"] == trained["run_id"]

    # Without them: one line naming the server and what is missing, and nothing written.
    output.unlink()
    done = run_stage(*forecast)
    assert done.returncode == 2 and not output.exists()
    last_line = done.stderr.strip().splitlines()[-1]
    assert f"tracking.uri={auth_store.uri} refused the request" in last_line and last_line.endswith(
        "the server requires sign-in and MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD is not set; "
        "export both (never put them in conf/)"), last_line

    # An anonymous client cannot replace a file of the registered model through the artifact proxy.
    url = f"{auth_store.uri}/api/2.0/mlflow-artifacts/artifacts/{location.split(':', 1)[1].lstrip('/')}"
    request = urllib.request.Request(f"{url}/pyfunc_entry.py", b"print('owned')", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 401
    stored = next((auth_store.folder / "artifacts").rglob("pyfunc_entry.py")).read_text()
    assert "owned" not in stored


@pytest.mark.slow
@SERVER
def test_four_trainings_and_two_forecasts_at_once_share_one_server_and_outputs_folder(server_store, trained,
                                                                                      tmp_path):
    outputs = tmp_path / "outputs"
    # The default output folders' pattern, in one outputs folder of the test's own.
    run_dir = "hydra.run.dir=" + str(outputs / "runs" / "${now:%Y-%m-%d}" / "${now:%H-%M-%S-%f}")
    forecast = outputs / "forecast.csv"  # both forecast jobs write here
    uri = f"tracking.uri={server_store.uri}"
    jobs = [start_stage("pipeline.train", f"data.path={server_store.folder / 'train.parquet'}", uri, run_dir, *SMALL,
                  f"seed={seed}") for seed in range(4)]
    jobs += [start_stage("pipeline.forecast", f"model_uri=runs:/{trained['run_id']}/model", f"output={forecast}",
                   f"data.path={server_store.folder / 'new.parquet'}", uri, run_dir) for _ in range(2)]
    finished = [job.communicate(timeout=600) for job in jobs]
    for job, (_, err) in zip(jobs, finished):
        assert job.returncode == 0, err[-3000:]
    summaries = [json.loads(out) for out, _ in finished]

    client = MlflowClient(server_store.uri)
    trained = [s["run_id"] for s in summaries[:4]]
    assert len(set(trained)) == 4
    folders = set()
    for run_id in trained:
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and "test_mase" in run.data.metrics
        folder = Path(run.data.tags["output_dir"])
        folders.add(folder)
        # Each folder holds its own run's files, whole: no job wrote into another's.
        assert json.loads((folder / "metrics.json").read_text())["run_id"] == run_id
        log = (folder / "train.log").read_text()
        assert run_id in log and not any(other in log for other in set(trained) - {run_id})
        assert (folder / "checkpoints" / "last.ckpt").is_file()
    assert len(folders) == 4 and all(folder.parent.parent == outputs / "runs" for folder in folders)

    # One complete file from the two forecasts (they forecast the same thing), and no temporary left behind.
    written = pd.read_csv(forecast)
    assert len(written) == 48 and written.notna().all().all()
    assert sorted(p.name for p in outputs.iterdir() if p.is_file()) == ["forecast.csv"]
    umask = os.umask(0)
    os.umask(umask)
    assert forecast.stat().st_mode & 0o777 == 0o666 & ~umask  # readable as any file the job writes, not 0600
    for summary in summaries[4:]:
        assert client.get_run(summary["run_id"]).info.status == "FINISHED"


@pytest.mark.slow
@AUTH
def test_a_password_in_the_tracking_uri_is_never_printed_logged_or_recorded(auth_store, tmp_path, monkeypatch):
    # MLflow's clients take the credentials from the URI itself; the training stage must publish none of it.
    host = auth_store.uri.removeprefix("http://")
    done = run_stage("pipeline.train", f"data.path={auth_store.folder / 'train.parquet'}", "tracking=server",
                     f"hydra.run.dir={tmp_path / 'run'}", *SMALL, "trainer.max_steps=4",
                     env={"MLFLOW_TRACKING_URI": f"http://{ADMIN}:{PASSWORD}@{host}"})
    assert done.returncode == 0, done.stderr[-3000:].replace(PASSWORD, "***")
    summary = json.loads(done.stdout)
    assert summary["tracking_uri"] == f"http://***@{host}"
    written = [done.stdout, done.stderr] + [path.read_text() for path in (tmp_path / "run").rglob("*")
                                            if path.suffix in (".log", ".json", ".yaml")]
    assert all(PASSWORD not in text for text in written)
    # Read back as another signed-in user, as the team's default READ permission lets anyone.
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    get_app_client("basic-auth", tracking_uri=auth_store.uri).create_user("reader", "another-long-password")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "reader")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "another-long-password")
    client = MlflowClient(auth_store.uri)
    run = client.get_run(summary["run_id"])
    assert PASSWORD not in json.dumps([run.data.params, run.data.tags, run.data.metrics])
    folder = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "artifacts")))
    texts = [p.read_bytes() for p in folder.rglob("*") if p.is_file()]
    assert texts and all(PASSWORD.encode() not in text for text in texts)
    assert f"uri: http://***@{host}" in (folder / "config.yaml").read_text()


@pytest.mark.slow
@AUTH
def test_a_job_user_without_edit_on_the_experiment_is_told_what_to_grant_and_runs_once_granted(
        auth_store, tmp_path, monkeypatch):
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    admin = get_app_client("basic-auth", tracking_uri=auth_store.uri)
    admin.create_user("forecast-job", "a-job-password-123")
    experiment = MlflowClient(auth_store.uri).create_experiment("jobs")  # the admin's: the job may read it only
    job = {"MLFLOW_TRACKING_USERNAME": "forecast-job", "MLFLOW_TRACKING_PASSWORD": "a-job-password-123"}
    train = ["pipeline.train", f"data.path={auth_store.folder / 'train.parquet'}", f"tracking.uri={auth_store.uri}",
             "tracking.experiment=jobs", *SMALL, "trainer.max_steps=2"]
    done = run_stage(*train, f"hydra.run.dir={tmp_path / 'refused'}", env=job)
    assert done.returncode == 2, done.stderr[-3000:]
    line = done.stderr.strip().splitlines()[-1]
    assert f"tracking.uri={auth_store.uri} refused user 'forecast-job' /api/2.0/mlflow/" in line, line
    assert "(HTTP 403): that user needs EDIT on experiment 'jobs'" in line, line
    assert "grant_user_permission('forecast-job', 'experiment', EXPERIMENT_ID, 'EDIT')" in line
    admin.grant_user_permission("forecast-job", "experiment", experiment, "EDIT")
    done = run_stage(*train, f"hydra.run.dir={tmp_path / 'granted'}", env=job)
    assert done.returncode == 0, done.stderr[-3000:]
