"""Reading and shaping series: files and folders read and checked into the long frame, ids and times as the user
wrote them, known-future vintages, per-series scaling, input features, windows and the batches of them."""
