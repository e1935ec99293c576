"""
AlphaGo's policy network
========================

A 19x19x48 stack of feature planes, zero padded to 23x23 for 5x5 filters,
then eleven layers padded to 21x21 for 3x3 filters, and a 1x1 convolution
with a different bias at each of the 361 points: no pooling, every layer
stays 19x19 (Silver et al., 2016).
"""

import argparse

import convlens as cl
from convlens import zoo

parser = argparse.ArgumentParser()
parser.add_argument("--k", type=int, default=192)
args, _ = parser.parse_known_args()

report = cl.trace_shapes(zoo.alphago_policy(args.k), (1, 48, 19, 19))
print(report)
