"""convscope/formats/torch"""
