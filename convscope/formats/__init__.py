"""What a model is on disk and in other frameworks, each in its own module (imported on use):

``architecture`` (JSON layer lists, read and written through the layer registry), ``presets``,
``model_file`` (SavedModel, save_model, load_model), ``safetensors`` (the container, read
without executing anything), ``files`` (atomic writes), ``onnx``, ``torch``.
"""
