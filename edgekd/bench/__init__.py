"""Latency and accuracy of artifacts (bench/<device>.json) and the report built from them."""
