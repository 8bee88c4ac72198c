"""Evaluation against ground truth: automatic boxes, the classical peers, the demo, the benchmark, figures."""
