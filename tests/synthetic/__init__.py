"""Tests of the synthetic datasets."""
