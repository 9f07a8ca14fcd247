"""Few-shot adapters: the head maths (`heads`), the record and its persisted format (`model`), the
stores (`store`). HTTP request checks live with the routers' dependencies (`service.deps`)."""
from .heads import HEADS, PROTOTYPE, distances, leave_one_out_accuracy, prototypes, softmax_neg
from .model import ADAPTER_FORMAT, ADAPTER_ID, Adapter, decode, encode, new_adapter
from .store import AdapterStore, FileAdapterStore

__all__ = [
    "ADAPTER_FORMAT", "ADAPTER_ID", "HEADS", "PROTOTYPE", "Adapter", "AdapterStore", "FileAdapterStore",
    "decode", "distances", "encode", "leave_one_out_accuracy", "new_adapter", "prototypes", "softmax_neg",
]
