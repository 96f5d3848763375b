"""The network and its blocks (no Lightning, no I/O): encoder, decoders, ensemble, batched prediction; and the
LightningModule that trains it (training_module.py, the only module here that imports Lightning)."""
