"""Transaction processing: one state machine per mode, sharing `run.TransRun`."""
