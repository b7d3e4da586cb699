from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Output(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_UNSPECIFIED: _ClassVar[Output]
    OUTPUT_RATES: _ClassVar[Output]
    OUTPUT_LOG_RATES: _ClassVar[Output]
    OUTPUT_COUNTS: _ClassVar[Output]
    OUTPUT_RECONSTRUCTION: _ClassVar[Output]
    OUTPUT_PREPROCESSED: _ClassVar[Output]
    OUTPUT_STATS: _ClassVar[Output]

class CountFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COUNT_FORMAT_UNSPECIFIED: _ClassVar[CountFormat]
    COUNT_FORMAT_SPARSE: _ClassVar[CountFormat]
    COUNT_FORMAT_DENSE_U8: _ClassVar[CountFormat]
    COUNT_FORMAT_RICE: _ClassVar[CountFormat]

class ImageEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_ENCODING_UNSPECIFIED: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_RAW: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_PNG: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_JPEG: _ClassVar[ImageEncoding]

class FloatFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FLOAT_FORMAT_UNSPECIFIED: _ClassVar[FloatFormat]
    FLOAT_FORMAT_FP16: _ClassVar[FloatFormat]
    FLOAT_FORMAT_FP32: _ClassVar[FloatFormat]
    FLOAT_FORMAT_U8_LOG: _ClassVar[FloatFormat]

class ChannelOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANNEL_ORDER_UNSPECIFIED: _ClassVar[ChannelOrder]
    CHANNEL_ORDER_BGR: _ClassVar[ChannelOrder]
    CHANNEL_ORDER_RGB: _ClassVar[ChannelOrder]

class WindowPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WINDOW_POLICY_UNSPECIFIED: _ClassVar[WindowPolicy]
    WINDOW_POLICY_BLOCK: _ClassVar[WindowPolicy]
    WINDOW_POLICY_DROP_OLDEST: _ClassVar[WindowPolicy]
OUTPUT_UNSPECIFIED: Output
OUTPUT_RATES: Output
OUTPUT_LOG_RATES: Output
OUTPUT_COUNTS: Output
OUTPUT_RECONSTRUCTION: Output
OUTPUT_PREPROCESSED: Output
OUTPUT_STATS: Output
COUNT_FORMAT_UNSPECIFIED: CountFormat
COUNT_FORMAT_SPARSE: CountFormat
COUNT_FORMAT_DENSE_U8: CountFormat
COUNT_FORMAT_RICE: CountFormat
IMAGE_ENCODING_UNSPECIFIED: ImageEncoding
IMAGE_ENCODING_RAW: ImageEncoding
IMAGE_ENCODING_PNG: ImageEncoding
IMAGE_ENCODING_JPEG: ImageEncoding
FLOAT_FORMAT_UNSPECIFIED: FloatFormat
FLOAT_FORMAT_FP16: FloatFormat
FLOAT_FORMAT_FP32: FloatFormat
FLOAT_FORMAT_U8_LOG: FloatFormat
CHANNEL_ORDER_UNSPECIFIED: ChannelOrder
CHANNEL_ORDER_BGR: ChannelOrder
CHANNEL_ORDER_RGB: ChannelOrder
WINDOW_POLICY_UNSPECIFIED: WindowPolicy
WINDOW_POLICY_BLOCK: WindowPolicy
WINDOW_POLICY_DROP_OLDEST: WindowPolicy

class RawFrame(_message.Message):
    __slots__ = ("height", "width", "channels", "channel_order", "data")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ORDER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    height: int
    width: int
    channels: int
    channel_order: ChannelOrder
    data: bytes
    def __init__(self, height: _Optional[int] = ..., width: _Optional[int] = ..., channels: _Optional[int] = ..., channel_order: _Optional[_Union[ChannelOrder, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("encoded", "raw")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    raw: RawFrame
    def __init__(self, encoded: _Optional[bytes] = ..., raw: _Optional[_Union[RawFrame, _Mapping]] = ...) -> None: ...

class Patches(_message.Message):
    __slots__ = ("count", "data")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    count: int
    data: bytes
    def __init__(self, count: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class EncodeOptions(_message.Message):
    __slots__ = ("outputs", "seed", "count_format", "image_encoding", "jpeg_quality", "float_format")
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    COUNT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ENCODING_FIELD_NUMBER: _ClassVar[int]
    JPEG_QUALITY_FIELD_NUMBER: _ClassVar[int]
    FLOAT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    outputs: _containers.RepeatedScalarFieldContainer[Output]
    seed: int
    count_format: CountFormat
    image_encoding: ImageEncoding
    jpeg_quality: int
    float_format: FloatFormat
    def __init__(self, outputs: _Optional[_Iterable[_Union[Output, str]]] = ..., seed: _Optional[int] = ..., count_format: _Optional[_Union[CountFormat, str]] = ..., image_encoding: _Optional[_Union[ImageEncoding, str]] = ..., jpeg_quality: _Optional[int] = ..., float_format: _Optional[_Union[FloatFormat, str]] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("encoding", "height", "width", "data")
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    encoding: ImageEncoding
    height: int
    width: int
    data: bytes
    def __init__(self, encoding: _Optional[_Union[ImageEncoding, str]] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class DenseCounts(_message.Message):
    __slots__ = ("counts", "saturated")
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    SATURATED_FIELD_NUMBER: _ClassVar[int]
    counts: bytes
    saturated: int
    def __init__(self, counts: _Optional[bytes] = ..., saturated: _Optional[int] = ...) -> None: ...

class RiceCodes(_message.Message):
    __slots__ = ("parameters", "quotients", "remainders")
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    QUOTIENTS_FIELD_NUMBER: _ClassVar[int]
    REMAINDERS_FIELD_NUMBER: _ClassVar[int]
    parameters: bytes
    quotients: bytes
    remainders: bytes
    def __init__(self, parameters: _Optional[bytes] = ..., quotients: _Optional[bytes] = ..., remainders: _Optional[bytes] = ...) -> None: ...

class RateCodes(_message.Message):
    __slots__ = ("log_min", "log_step", "base", "codes", "rates", "log_rates")
    LOG_MIN_FIELD_NUMBER: _ClassVar[int]
    LOG_STEP_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    CODES_FIELD_NUMBER: _ClassVar[int]
    RATES_FIELD_NUMBER: _ClassVar[int]
    LOG_RATES_FIELD_NUMBER: _ClassVar[int]
    log_min: float
    log_step: float
    base: bytes
    codes: RiceCodes
    rates: bool
    log_rates: bool
    def __init__(self, log_min: _Optional[float] = ..., log_step: _Optional[float] = ..., base: _Optional[bytes] = ..., codes: _Optional[_Union[RiceCodes, _Mapping]] = ..., rates: _Optional[bool] = ..., log_rates: _Optional[bool] = ...) -> None: ...

class SparseCounts(_message.Message):
    __slots__ = ("patch_offsets", "latents", "counts", "large_counts")
    PATCH_OFFSETS_FIELD_NUMBER: _ClassVar[int]
    LATENTS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    LARGE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    patch_offsets: bytes
    latents: bytes
    counts: bytes
    large_counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, patch_offsets: _Optional[bytes] = ..., latents: _Optional[bytes] = ..., counts: _Optional[bytes] = ..., large_counts: _Optional[_Iterable[int]] = ...) -> None: ...

class StageTimings(_message.Message):
    __slots__ = ("decode_seconds", "queue_seconds", "inference_seconds", "sampling_seconds", "packing_seconds", "total_seconds", "batch_size")
    DECODE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PACKING_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    decode_seconds: float
    queue_seconds: float
    inference_seconds: float
    sampling_seconds: float
    packing_seconds: float
    total_seconds: float
    batch_size: int
    def __init__(self, decode_seconds: _Optional[float] = ..., queue_seconds: _Optional[float] = ..., inference_seconds: _Optional[float] = ..., sampling_seconds: _Optional[float] = ..., packing_seconds: _Optional[float] = ..., total_seconds: _Optional[float] = ..., batch_size: _Optional[int] = ...) -> None: ...

class FrameStats(_message.Message):
    __slots__ = ("total_spikes", "active_fraction", "population_sparsity", "mean_rate", "timings")
    TOTAL_SPIKES_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FRACTION_FIELD_NUMBER: _ClassVar[int]
    POPULATION_SPARSITY_FIELD_NUMBER: _ClassVar[int]
    MEAN_RATE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    total_spikes: int
    active_fraction: float
    population_sparsity: float
    mean_rate: float
    timings: StageTimings
    def __init__(self, total_spikes: _Optional[int] = ..., active_fraction: _Optional[float] = ..., population_sparsity: _Optional[float] = ..., mean_rate: _Optional[float] = ..., timings: _Optional[_Union[StageTimings, _Mapping]] = ...) -> None: ...

class EncodeResult(_message.Message):
    __slots__ = ("height", "width", "grid_rows", "grid_cols", "n_patches", "n_latents", "seed", "float_format", "rates", "log_rates", "dense_counts", "sparse_counts", "rice_counts", "reconstruction", "preprocessed", "reconstruction_patches", "stats", "rate_codes")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    GRID_ROWS_FIELD_NUMBER: _ClassVar[int]
    GRID_COLS_FIELD_NUMBER: _ClassVar[int]
    N_PATCHES_FIELD_NUMBER: _ClassVar[int]
    N_LATENTS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    FLOAT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    RATES_FIELD_NUMBER: _ClassVar[int]
    LOG_RATES_FIELD_NUMBER: _ClassVar[int]
    DENSE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    SPARSE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    RICE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    RECONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSED_FIELD_NUMBER: _ClassVar[int]
    RECONSTRUCTION_PATCHES_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    RATE_CODES_FIELD_NUMBER: _ClassVar[int]
    height: int
    width: int
    grid_rows: int
    grid_cols: int
    n_patches: int
    n_latents: int
    seed: int
    float_format: FloatFormat
    rates: bytes
    log_rates: bytes
    dense_counts: DenseCounts
    sparse_counts: SparseCounts
    rice_counts: RiceCodes
    reconstruction: Image
    preprocessed: Image
    reconstruction_patches: bytes
    stats: FrameStats
    rate_codes: RateCodes
    def __init__(self, height: _Optional[int] = ..., width: _Optional[int] = ..., grid_rows: _Optional[int] = ..., grid_cols: _Optional[int] = ..., n_patches: _Optional[int] = ..., n_latents: _Optional[int] = ..., seed: _Optional[int] = ..., float_format: _Optional[_Union[FloatFormat, str]] = ..., rates: _Optional[bytes] = ..., log_rates: _Optional[bytes] = ..., dense_counts: _Optional[_Union[DenseCounts, _Mapping]] = ..., sparse_counts: _Optional[_Union[SparseCounts, _Mapping]] = ..., rice_counts: _Optional[_Union[RiceCodes, _Mapping]] = ..., reconstruction: _Optional[_Union[Image, _Mapping]] = ..., preprocessed: _Optional[_Union[Image, _Mapping]] = ..., reconstruction_patches: _Optional[bytes] = ..., stats: _Optional[_Union[FrameStats, _Mapping]] = ..., rate_codes: _Optional[_Union[RateCodes, _Mapping]] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("arch", "n_latents", "patch_size", "min_frame_side", "data", "source_checkpoint_sha256", "bundle_package_version", "opset", "manifest_json")
    ARCH_FIELD_NUMBER: _ClassVar[int]
    N_LATENTS_FIELD_NUMBER: _ClassVar[int]
    PATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MIN_FRAME_SIDE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SOURCE_CHECKPOINT_SHA256_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_PACKAGE_VERSION_FIELD_NUMBER: _ClassVar[int]
    OPSET_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    arch: str
    n_latents: int
    patch_size: int
    min_frame_side: int
    data: str
    source_checkpoint_sha256: str
    bundle_package_version: str
    opset: int
    manifest_json: str
    def __init__(self, arch: _Optional[str] = ..., n_latents: _Optional[int] = ..., patch_size: _Optional[int] = ..., min_frame_side: _Optional[int] = ..., data: _Optional[str] = ..., source_checkpoint_sha256: _Optional[str] = ..., bundle_package_version: _Optional[str] = ..., opset: _Optional[int] = ..., manifest_json: _Optional[str] = ...) -> None: ...

class ServerLimits(_message.Message):
    __slots__ = ("max_frame_height", "max_frame_width", "max_frame_pixels", "max_frame_bytes", "max_patches", "max_receive_message_bytes", "max_send_message_bytes", "max_batch_frames", "max_batch_delay_seconds", "max_queue_frames", "max_streams", "default_window", "max_window")
    MAX_FRAME_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_WIDTH_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_PATCHES_FIELD_NUMBER: _ClassVar[int]
    MAX_RECEIVE_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SEND_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FRAMES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_DELAY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FRAMES_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAMS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_WINDOW_FIELD_NUMBER: _ClassVar[int]
    MAX_WINDOW_FIELD_NUMBER: _ClassVar[int]
    max_frame_height: int
    max_frame_width: int
    max_frame_pixels: int
    max_frame_bytes: int
    max_patches: int
    max_receive_message_bytes: int
    max_send_message_bytes: int
    max_batch_frames: int
    max_batch_delay_seconds: float
    max_queue_frames: int
    max_streams: int
    default_window: int
    max_window: int
    def __init__(self, max_frame_height: _Optional[int] = ..., max_frame_width: _Optional[int] = ..., max_frame_pixels: _Optional[int] = ..., max_frame_bytes: _Optional[int] = ..., max_patches: _Optional[int] = ..., max_receive_message_bytes: _Optional[int] = ..., max_send_message_bytes: _Optional[int] = ..., max_batch_frames: _Optional[int] = ..., max_batch_delay_seconds: _Optional[float] = ..., max_queue_frames: _Optional[int] = ..., max_streams: _Optional[int] = ..., default_window: _Optional[int] = ..., max_window: _Optional[int] = ...) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("server_version", "model", "limits", "execution_provider", "device")
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    server_version: str
    model: ModelInfo
    limits: ServerLimits
    execution_provider: str
    device: str
    def __init__(self, server_version: _Optional[str] = ..., model: _Optional[_Union[ModelInfo, _Mapping]] = ..., limits: _Optional[_Union[ServerLimits, _Mapping]] = ..., execution_provider: _Optional[str] = ..., device: _Optional[str] = ...) -> None: ...

class EncodeRequest(_message.Message):
    __slots__ = ("frame", "patches", "options")
    FRAME_FIELD_NUMBER: _ClassVar[int]
    PATCHES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    frame: Frame
    patches: Patches
    options: EncodeOptions
    def __init__(self, frame: _Optional[_Union[Frame, _Mapping]] = ..., patches: _Optional[_Union[Patches, _Mapping]] = ..., options: _Optional[_Union[EncodeOptions, _Mapping]] = ...) -> None: ...

class EncodeResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: EncodeResult
    def __init__(self, result: _Optional[_Union[EncodeResult, _Mapping]] = ...) -> None: ...

class StreamSettings(_message.Message):
    __slots__ = ("window", "policy")
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    window: int
    policy: WindowPolicy
    def __init__(self, window: _Optional[int] = ..., policy: _Optional[_Union[WindowPolicy, str]] = ...) -> None: ...

class StreamEncodeRequest(_message.Message):
    __slots__ = ("sequence", "frame", "options", "settings")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    frame: Frame
    options: EncodeOptions
    settings: StreamSettings
    def __init__(self, sequence: _Optional[int] = ..., frame: _Optional[_Union[Frame, _Mapping]] = ..., options: _Optional[_Union[EncodeOptions, _Mapping]] = ..., settings: _Optional[_Union[StreamSettings, _Mapping]] = ...) -> None: ...

class StreamEncodeResponse(_message.Message):
    __slots__ = ("sequence", "result", "error", "dropped_count", "dropped_sequences")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DROPPED_COUNT_FIELD_NUMBER: _ClassVar[int]
    DROPPED_SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    result: EncodeResult
    error: Status
    dropped_count: int
    dropped_sequences: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, sequence: _Optional[int] = ..., result: _Optional[_Union[EncodeResult, _Mapping]] = ..., error: _Optional[_Union[Status, _Mapping]] = ..., dropped_count: _Optional[int] = ..., dropped_sequences: _Optional[_Iterable[int]] = ...) -> None: ...
