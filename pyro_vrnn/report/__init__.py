"""What a trained model shows: samples, the paper's figures, training curves."""
