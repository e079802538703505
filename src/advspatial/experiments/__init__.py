"""advspatial.experiments"""
