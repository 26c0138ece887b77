"""convscope/inspect"""
