"""Entry points: train (every experiment), speed, landscape, report."""
