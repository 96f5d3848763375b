"""The serve stage: a model over HTTP, served by MLflow's own scoring server (the same /invocations, /ping and
/health as `mlflow models serve`), but only once every file of it matched the digests recorded when it was logged,
and with a limit on a request's size.

    python -m pipeline.serve model_uri=models:/demand@champion port=5001

`mlflow models serve` runs whatever code the model store holds; this stage downloads the model, checks every file
(a changed, added or missing file is refused in one line, and nothing of it runs), and serves that checked copy.
A request over serve.max_request_bytes is answered 413 before it is read whole.
"""

import logging
import tempfile

import hydra
import mlflow
from omegaconf import DictConfig

from pipeline.cli import command, finish
from pipeline.config import CONF_DIR, ServeConfig, to_config
from pipeline.errors import ConfigError
from pipeline.inference.saved_model import download_verified

log = logging.getLogger(__name__)


class BodyLimit:
    """ASGI middleware: a request whose body exceeds `limit` bytes gets 413, by its Content-Length or, sent in chunks
    without one, once that many bytes arrived; nothing more of it is read, and the app never sees it."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.limit:
            return await self.refuse(send)
        # The body, read here up to the limit (the scoring server reads it whole anyway), then handed on.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, receive, send)
            chunks.append(message.get("body", b""))
            size, more = size + len(chunks[-1]), message.get("more_body", False)
            if size > self.limit:
                return await self.refuse(send)
        body = b"".join(chunks)

        async def replay():
            nonlocal body
            message, body = {"type": "http.request", "body": body, "more_body": False}, b""
            return message

        await self.app(scope, replay, send)

    async def refuse(self, send) -> None:
        body = (b'{"error_code": "REQUEST_TOO_LARGE", "message": "the request is over serve.max_request_bytes=%d"}'
                % self.limit)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})


def serve(cfg: ServeConfig) -> dict:
    """Check the model's files, then serve the checked copy until stopped (SIGTERM or Ctrl-C end it cleanly)."""
    import uvicorn
    from mlflow.pyfunc import scoring_server

    if not cfg.model_uri:
        raise ConfigError("give model_uri=<MLflow model URI> (models:/NAME@champion, runs:/RUN_ID/model) to serve")
    with tempfile.TemporaryDirectory(prefix="pipeline-serve-") as folder:
        local, run_id, version = download_verified(cfg.model_uri, cfg.tracking, folder)
        # MLflow's loader runs the pyfunc code of this copy, whose every file was just checked.
        app = scoring_server.init(mlflow.pyfunc.load_model(str(local)))
        log.info("serving %s (run %s%s, every file checked) on http://%s:%d/invocations; requests up to %d bytes",
                 cfg.model_uri, run_id, f", version {version}" if version else "", cfg.host, cfg.port,
                 cfg.max_request_bytes)
        uvicorn.run(BodyLimit(app, cfg.max_request_bytes), host=cfg.host, port=cfg.port, log_level="warning")
    return {"model_uri": cfg.model_uri, "model_run_id": run_id, "model_version": version,
            "address": f"http://{cfg.host}:{cfg.port}", "stopped": True}


@hydra.main(config_path=CONF_DIR, config_name="serve", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    finish(lambda: serve(to_config(cfg)), cfg.tracking.uri)


def main() -> None:
    command("serve", hydra_main)


if __name__ == "__main__":
    main()
