"""Models: Xception backbone, long-distance attention, and the LDA variants."""
