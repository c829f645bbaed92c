// Element types and the scalar conversions between them: bf16 and fp8 (e4m3fn, e5m2), each with
// round-to-nearest-even and saturation. Names match safetensors' dtype strings.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/status.h"

namespace mariana {

enum class DType : uint8_t { kF32, kF64, kF16, kBF16, kF8E4M3, kF8E5M2, kI64, kI32, kI16, kI8, kU8, kBool };

size_t dtype_size(DType dtype);
// The safetensors spelling: "F32", "F64", "F16", "BF16", "F8_E4M3", "F8_E5M2", "I64", "I32", "I16",
// "I8", "U8", "BOOL".
const char* dtype_name(DType dtype);
Result<DType> dtype_from_name(std::string_view name);

// bf16: the top 16 bits of an fp32, rounded to nearest even; NaN stays NaN (quiet).
uint16_t f32_to_bf16(float x);
float bf16_to_f32(uint16_t x);

// fp8 e4m3fn (bias 7, no infinities, 0x7f/0xff = NaN, max 448): round to nearest even;
// finite values and ±inf beyond ±448 saturate to ±448; NaN -> 0x7f.
uint8_t f32_to_e4m3(float x);
float e4m3_to_f32(uint8_t x);

// fp8 e5m2 (bias 15, IEEE-like, max finite 57344): round to nearest even; finite values and ±inf
// beyond ±57344 saturate to ±57344; NaN -> 0x7e (quiet NaN).
uint8_t f32_to_e5m2(float x);
float e5m2_to_f32(uint8_t x);

constexpr float kE4M3Max = 448.0f;
constexpr float kE5M2Max = 57344.0f;

}  // namespace mariana
