"""Offline preprocessing: videos -> dlib face crop stacks -> ArrayRecord shards."""
