"""FAISS indices: choose a factory (`choice`), build and tune one (`build`, `tune`, `recall`), open it (`store`)."""
