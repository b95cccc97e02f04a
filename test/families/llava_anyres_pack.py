"""PyTorch oracle for LLaVA-OneVision anyres packing (test/families/llava-anyres.test.ts).

Written from Python transformers' modeling_llava_onevision semantics, with torch ops, independently of
nanomind's TypeScript: select_best_resolution -> get_anyres_image_grid_shape (tile grid), view/permute
into one feature map, unpad_image (slice off the padded rows/columns), the anyres_max_N downscale with
F.interpolate(mode="bilinear") as pack_image_features calls it (align_corners left at its default, False),
image_newline concatenated after every row, base-patch rows first.

argv[1]: a JSON job {"tile_size", "patch_size", "pinpoints", "vision_aspect_ratio", "hidden",
  "images": [{"features": raw float32 file [patches, side*side, hidden], "newline": raw float32 file
  [hidden], "image_size": [height, width], "out": raw float32 file to write}]}
"""
import json
import math
import sys
import warnings

import torch
import torch.nn.functional as F


def read_f32(path, shape):
    with open(path, "rb") as f:
        return torch.frombuffer(bytearray(f.read()), dtype=torch.float32).reshape(shape)


def select_best_resolution(original_size, possible_resolutions):
    original_height, original_width = original_size
    best, max_effective, min_wasted = None, 0, float("inf")
    for height, width in possible_resolutions:
        scale = min(width / original_width, height / original_height)
        down_w, down_h = int(original_width * scale), int(original_height * scale)
        effective = min(down_w * down_h, original_width * original_height)
        wasted = width * height - effective
        if effective > max_effective or (effective == max_effective and wasted < min_wasted):
            max_effective, min_wasted, best = effective, wasted, (height, width)
    return best


def unpad_image(tensor, original_size):
    original_height, original_width = original_size
    current_height, current_width = tensor.shape[1:]
    if original_width / original_height > current_width / current_height:
        new_height = int(round(original_height * (current_width / original_width), 7))
        padding = (current_height - new_height) // 2
        return tensor[:, padding : current_height - padding, :]
    new_width = int(round(original_width * (current_height / original_height), 7))
    padding = (current_width - new_width) // 2
    return tensor[:, :, padding : current_width - padding]


def pack(features, newline, image_size, job):
    side = job["tile_size"] // job["patch_size"]
    base, tiles = features[0], features[1:]
    best_h, best_w = select_best_resolution(image_size, job["pinpoints"])
    rows, cols = best_h // job["tile_size"], best_w // job["tile_size"]
    fmap = tiles.view(rows, cols, side, side, -1).permute(4, 0, 2, 1, 3).contiguous().flatten(1, 2).flatten(2, 3)
    fmap = unpad_image(fmap, image_size)
    max_num_patches = int(job["vision_aspect_ratio"][len("anyres_max_"):])
    _, h, w = fmap.shape
    ratio = math.sqrt(h * w / (max_num_patches * side**2))
    if ratio > 1.1:
        fmap = F.interpolate(fmap[None], [int(h // ratio), int(w // ratio)], mode="bilinear")[0]
    fmap = torch.cat((fmap, newline[:, None, None].expand(*fmap.shape[:-1], 1)), dim=-1)
    return torch.cat((base, fmap.flatten(1, 2).transpose(0, 1)), dim=0)


def main():
    warnings.simplefilter("ignore")
    with open(sys.argv[1]) as f:
        job = json.load(f)
    side = job["tile_size"] // job["patch_size"]
    hidden = job["hidden"]
    for img in job["images"]:
        feats = read_f32(img["features"], (-1, side * side, hidden))
        packed = pack(feats, read_f32(img["newline"], (hidden,)), tuple(img["image_size"]), job)
        with open(img["out"], "wb") as f:
            f.write(packed.contiguous().numpy().astype("<f4").tobytes())


if __name__ == "__main__":
    main()
