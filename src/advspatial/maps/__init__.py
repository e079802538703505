"""advspatial.maps"""
