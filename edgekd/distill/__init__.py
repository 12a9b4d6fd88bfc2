"""Knowledge distillation: losses, schedules, feature adapters and the training loop."""
