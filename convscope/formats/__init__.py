"""convscope/formats"""
