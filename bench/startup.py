"""placeholder"""
def add_arguments(parser): parser.add_argument("--out", default="bench/results")
