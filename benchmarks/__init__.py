"""keras_mpe's benchmarks: quality (`python -m benchmarks.quality`) and
speed (`python benchmarks/<name>_speed.py`, `criteo_epoch_time.py`)."""
