"""Model layer: chat format with per-step loss masks, policy backends, training, serving."""
