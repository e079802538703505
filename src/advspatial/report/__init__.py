"""advspatial.report"""
