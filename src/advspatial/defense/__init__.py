"""advspatial.defense"""
