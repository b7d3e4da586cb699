"""pvae.training"""
