"""pipeline: recurrent forecasters configured by Hydra, trained by Lightning, tracked in MLflow.

    import pipeline
    model = pipeline.load_model("models:/demand@champion", tracking_uri="sqlite:///outputs/mlflow.db")
    model.forecast(frame)          # the next horizon steps of each series in `frame`
    model.features                 # the network's input columns, in order
    model.stream("demand")         # one series, updated observation by observation
"""


def load_model(uri: str, tracking_uri: str | None = None):
    """A model logged by pipeline.train, its files checked against the digests recorded when it was logged
    (pipeline.inference.saved_model.load_model); `tracking_uri` defaults to MLflow's current one."""
    import mlflow  # here, so `import pipeline` stays light

    from pipeline.inference.saved_model import load_model as load

    return load(uri, tracking_uri or mlflow.get_tracking_uri())
