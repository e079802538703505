"""advspatial.analysis"""
