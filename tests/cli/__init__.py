"""Tests of the rdmm command line."""
