"""Other sensors' views of the synthetic set's scenes: what ``modaverse bind`` binds to pictures and videos.

ImageBind learns a modality by pairing it with images or videos of the same moment, never with
text. Each view here is rendered from its anchor's own geometry (:func:`~modaverse.data.scenes.layout`
for a picture, :func:`~modaverse.data.scenes.path` for a video) under a stated rule, with nuisances of
its own (:data:`~modaverse.data.scenes.SPANS`):

- **depth** (a picture's): a background plane at a distance, tilted across the frame, and each object
  nearer, at a distance drawn for it alone: the shape shows, the colour cannot (a check proves it);
- **thermal** (a picture's): each colour is a material with its own temperature (:data:`TEMPERATURE`),
  over the ambient background, blurred and noisy: the shape and, through the rule, the colour show;
- **IMU** (a video's): the accelerometer and gyroscope of a device riding the moving shape, at 200 Hz
  for ImageBind's 10-s window: the shape starts at rest, speeds up and stops, so the direction shows;
  colour and shape cannot;
- **audio** (a video's): each colour makes its own sound (:data:`SOUND_OF`): a video's soundtrack.
"""

from __future__ import annotations

import math

import numpy as np

from modaverse.data.scenes import AUDIO_RATE, IMAGE_SIZE, VIDEO_FPS, layout, path, sound

#: Degrees C of each colour's material (thermal's rule).
TEMPERATURE = {"blue": 2.0, "green": 36.0, "yellow": 52.0, "red": 72.0}
#: Full scale of a thermal image: 0 to 100 degrees C map to black to white.
THERMAL_RANGE = 100.0
#: The sound each colour makes (a video's soundtrack's rule).
SOUND_OF = {"red": "low", "green": "high", "blue": "chirp", "yellow": "noise"}
IMU_RATE, IMU_SECONDS, GRAVITY = 200, 10.0, 9.81
#: Metres per pixel of the video's frame, for the IMU's accelerations: a 64-px frame is 3.2 m wide, so a crossing
#: peaks at 1 to 3 m/s^2, what a hand-held device feels.
METRES_PER_PIXEL = 0.05


def _objects(content: dict) -> list[tuple[str, str]]:
    return [(content["colour"], content["shape"]), *map(tuple, content.get("others", ()))]


def depth(content: dict, scene: dict, scene_seed: int, params: dict, seed: int) -> np.ndarray:
    """``[H, W]`` uint16 millimetres (the 16-bit PNG convention ``media`` reads)."""
    rng = np.random.default_rng(seed)
    placed = layout(_objects(content), scene, scene_seed)
    x = np.linspace(-0.5, 0.5, IMAGE_SIZE, dtype=np.float32)
    angle = rng.uniform(0, 2 * math.pi)  # the plane's tilt direction
    ramp = x[None, :] * math.cos(angle) + x[:, None] * math.sin(angle)
    metres = params["distance"] + params["slope"] * ramp
    for _, mask in placed.objects:
        metres = np.where(mask, params["near"] * rng.uniform(0.85, 1.15), metres)
    metres = metres + rng.standard_normal(metres.shape).astype(np.float32) * params["noise"]
    return np.clip(metres * 1000, 1, 65535).astype(np.uint16)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0.05:
        return img
    radius = max(1, int(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.pad(img, radius, mode="edge")
    rows = np.apply_along_axis(lambda r: np.convolve(r, k, mode="valid"), 1, pad)
    return np.apply_along_axis(lambda c: np.convolve(c, k, mode="valid"), 0, rows)


def thermal(content: dict, scene: dict, scene_seed: int, params: dict, seed: int) -> np.ndarray:
    """``[H, W]`` uint8: 0 to :data:`THERMAL_RANGE` degrees C as black to white."""
    rng = np.random.default_rng(seed)
    placed = layout(_objects(content), scene, scene_seed)
    celsius = np.full((IMAGE_SIZE, IMAGE_SIZE), params["ambient"], np.float32)
    for colour, mask in placed.objects:
        celsius[mask] = TEMPERATURE[colour] + rng.uniform(-3, 3)
    celsius = _blur(celsius, params["blur"]) + rng.standard_normal(celsius.shape) * params["noise"]
    return np.clip(celsius / THERMAL_RANGE * 255, 0, 255).astype(np.uint8)


def imu(content: dict, scene: dict, scene_seed: int, params: dict, seed: int) -> np.ndarray:
    """``[6, 2000]`` float32: accelerometer (m/s^2, gravity on the device's up axis) then gyroscope (rad/s)."""
    rng = np.random.default_rng(seed)
    vector, travel, _ = path(content["motion"], scene, scene_seed)
    n = int(IMU_RATE * IMU_SECONDS)
    t = np.arange(n) / IMU_RATE
    seconds = int(scene["frames"]) / VIDEO_FPS
    u = np.clip((t - params["onset"]) / seconds, 0, 1)
    moving = (t >= params["onset"]) & (t <= params["onset"] + seconds)
    # d2/dt2 of travel * ease(u) (scenes.ease, the video's own timing): the push, then the brake
    accel = np.where(moving, travel * METRES_PER_PIXEL * (6 - 12 * u) / seconds**2, 0.0)
    ax, ay = accel * vector[0], -accel * vector[1]  # the device's y points up; the frame's grows down
    ay = ay + GRAVITY
    roll = math.radians(params["tilt"])
    acc = np.stack([ax * math.cos(roll) - ay * math.sin(roll), ax * math.sin(roll) + ay * math.cos(roll),
                    np.zeros(n)])
    gyro = np.zeros((3, n)) + rng.normal(0, 0.01, (3, 1))  # a small constant bias
    out = np.concatenate([acc, gyro]) + rng.standard_normal((6, n)) * params["noise"]
    return out.astype(np.float32)


def soundtrack(content: dict, params: dict, seed: int) -> np.ndarray:
    """A video's sound: its shape's colour decides the kind (:data:`SOUND_OF`)."""
    return sound(SOUND_OF[content["colour"]], params, seed)


#: The view each sensor takes of its anchor's modality, and the file type it is written as.
VIEWS = {"depth": ("image", "png"), "thermal": ("image", "png"), "imu": ("video", "npy"), "audio": ("video", "wav")}


def write_view(modality: str, content: dict, scene: dict, scene_seed: int, params: dict, out, seed: int) -> None:
    """Writes one view atomically: depth as a 16-bit PNG (mm), thermal as an 8-bit PNG, IMU as .npy, audio as WAV."""
    from PIL import Image

    from modaverse.core.atomic import write_atomic
    from modaverse.media.writers import encode_wav

    if modality == "audio":
        encode_wav(out, soundtrack(content, params, seed), AUDIO_RATE, "wav")
    elif modality == "imu":
        arr = imu(content, scene, scene_seed, params, seed)
        def save(tmp):
            with open(tmp, "wb") as f:
                np.save(f, arr)

        write_atomic(out, save)
    else:
        arr = (depth if modality == "depth" else thermal)(content, scene, scene_seed, params, seed)
        write_atomic(out, lambda tmp: Image.fromarray(arr).save(tmp, format="PNG"))
