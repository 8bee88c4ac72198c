"""Cases with ground truth: real chest CTs (fetched), breathing motion, CBCT-like images, the phantom."""
