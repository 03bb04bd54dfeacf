"""sampling: flow-matching schedulers (`schedulers.make_scheduler`), guidance and the denoising loop."""
