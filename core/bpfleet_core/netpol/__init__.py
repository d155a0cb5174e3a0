"""Network policy: models, validation, the simulator and the compiler to rule maps."""
