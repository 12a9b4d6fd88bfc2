"""Edge devices: the inventory (devices.yaml), the SSH transport, bundles, shipping, checks and the engine cache.

Entry points for the CLI: `ship.ship(run_dir, device, engines_only=False)` and
`check.check_device(device)`; local TensorRT builds: `local.build_local_engines`; ONNX files timed here or on a
device before training (the scout, latency-targeted pruning): `timing.timer_for`.
"""
