// Element-type table (sizes, safetensors names) and the scalar float conversions declared in
// core/dtype.h. Conversions work on the fp32 bit pattern with integer arithmetic, so they do not
// depend on the FP rounding mode; they are scalar and not meant for hot loops over big buffers.
#include "core/dtype.h"

#include <bit>
#include <cmath>
#include <limits>
#include <string>

namespace mariana {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF64:
    case DType::kI64: return 8;
    case DType::kF32:
    case DType::kI32: return 4;
    case DType::kF16:
    case DType::kBF16:
    case DType::kI16: return 2;
    case DType::kF8E4M3:
    case DType::kF8E5M2:
    case DType::kI8:
    case DType::kU8:
    case DType::kBool: return 1;
  }
  MARIANA_CHECK(false && "unknown DType");
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "F32";
    case DType::kF64: return "F64";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kF8E4M3: return "F8_E4M3";
    case DType::kF8E5M2: return "F8_E5M2";
    case DType::kI64: return "I64";
    case DType::kI32: return "I32";
    case DType::kI16: return "I16";
    case DType::kI8: return "I8";
    case DType::kU8: return "U8";
    case DType::kBool: return "BOOL";
  }
  MARIANA_CHECK(false && "unknown DType");
  return "";
}

Result<DType> dtype_from_name(std::string_view name) {
  static constexpr DType kAll[] = {DType::kF32,    DType::kF64,    DType::kF16, DType::kBF16,
                                   DType::kF8E4M3, DType::kF8E5M2, DType::kI64, DType::kI32,
                                   DType::kI16,    DType::kI8,     DType::kU8,  DType::kBool};
  for (DType d : kAll) {
    if (name == dtype_name(d)) return d;
  }
  return InvalidArgument("unknown dtype '" + std::string(name) + "'");
}

// ---- bf16 ----

uint16_t f32_to_bf16(float x) {
  uint32_t bits = std::bit_cast<uint32_t>(x);
  if (std::isnan(x)) return 0x7fc0;  // canonical quiet NaN, as PyTorch does
  // Round to nearest even on the 16 dropped bits; a carry ripples into the exponent, and past the
  // largest finite value it lands exactly on infinity (0x7f80), which is IEEE behaviour.
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float bf16_to_f32(uint16_t x) { return std::bit_cast<float>(static_cast<uint32_t>(x) << 16); }

// ---- fp8 ----

namespace {

// A small binary float format: kExpBits exponent bits with bias kBias, kManBits mantissa bits.
// max_code is the magnitude code of the largest finite value (saturation target).
struct Fp8Format {
  int man_bits;
  int bias;
  uint8_t max_code;
  float max_value;
};

constexpr Fp8Format kE4M3{3, 7, 0x7e, kE4M3Max};
constexpr Fp8Format kE5M2{2, 15, 0x7b, kE5M2Max};

// Shifts `value` right by `shift` bits (1..31), rounding to nearest, ties to even.
uint32_t shift_right_rne(uint32_t value, int shift) {
  uint32_t q = value >> shift;
  uint32_t rem = value & ((1u << shift) - 1u);
  uint32_t half = 1u << (shift - 1);
  if (rem > half || (rem == half && (q & 1u))) ++q;
  return q;
}

// Encodes a non-NaN float; the caller handles NaN.
uint8_t f32_to_fp8(float x, const Fp8Format& f) {
  uint32_t bits = std::bit_cast<uint32_t>(x);
  uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80u);
  uint32_t abs_bits = bits & 0x7fffffffu;
  // Saturate: anything beyond the largest finite value (including inf) clamps to it.
  if (std::bit_cast<float>(abs_bits) >= f.max_value) return sign | f.max_code;
  int exp = static_cast<int>(abs_bits >> 23);  // biased fp32 exponent
  if (exp == 0) return sign;                   // fp32 zero or subnormal: far below fp8's range
  uint32_t significand = (abs_bits & 0x7fffffu) | 0x800000u;  // 24 bits, implicit one made explicit
  int unbiased = exp - 127;
  int min_normal_exp = 1 - f.bias;
  uint32_t code;
  if (unbiased >= min_normal_exp) {
    // Normal: keep man_bits of mantissa. Rounding may carry into the exponent, which is exactly the
    // next binade's encoding (mantissa wraps to zero).
    uint32_t rounded = shift_right_rne(significand, 23 - f.man_bits);  // in [2^m, 2^(m+1)]
    code = (static_cast<uint32_t>(unbiased + f.bias) << f.man_bits) + (rounded - (1u << f.man_bits));
  } else {
    // Subnormal: count units of the smallest subnormal 2^(min_normal_exp - man_bits). The value is
    // significand * 2^(unbiased - 23), so the unit count is significand >> shift.
    int shift = 23 - f.man_bits + (min_normal_exp - unbiased);
    if (shift > 24) return sign;  // below half the smallest subnormal
    // A count that reaches 2^man_bits is the smallest normal, whose code is exactly that number.
    code = shift_right_rne(significand, shift);
  }
  // Cannot exceed max_code here: values >= max_value were handled above and max_value's
  // neighbourhood rounds down to it; keep the check as a guard.
  if (code > f.max_code) code = f.max_code;
  return static_cast<uint8_t>(sign | code);
}

float fp8_to_f32(uint8_t x, const Fp8Format& f) {
  uint32_t sign = static_cast<uint32_t>(x & 0x80u) << 24;
  uint32_t exp = (x & 0x7fu) >> f.man_bits;
  uint32_t man = x & ((1u << f.man_bits) - 1u);
  if (exp == 0) {
    // Subnormal: man * 2^(1 - bias - man_bits), exact in float.
    float v = std::ldexp(static_cast<float>(man), 1 - f.bias - f.man_bits);
    return std::bit_cast<float>(std::bit_cast<uint32_t>(v) | sign);
  }
  uint32_t bits = sign | ((exp - static_cast<uint32_t>(f.bias) + 127u) << 23) | (man << (23 - f.man_bits));
  return std::bit_cast<float>(bits);
}

float with_sign(float v, uint8_t code) { return (code & 0x80u) ? -v : v; }

}  // namespace

uint8_t f32_to_e4m3(float x) {
  if (std::isnan(x)) return 0x7f;
  return f32_to_fp8(x, kE4M3);
}

float e4m3_to_f32(uint8_t x) {
  if ((x & 0x7fu) == 0x7fu) return with_sign(std::numeric_limits<float>::quiet_NaN(), x);
  return fp8_to_f32(x, kE4M3);
}

uint8_t f32_to_e5m2(float x) {
  if (std::isnan(x)) return 0x7e;
  return f32_to_fp8(x, kE5M2);
}

float e5m2_to_f32(uint8_t x) {
  if ((x & 0x7cu) == 0x7cu) {  // exponent all ones: inf (mantissa 0) or NaN
    if ((x & 0x03u) == 0) return with_sign(std::numeric_limits<float>::infinity(), x);
    return with_sign(std::numeric_limits<float>::quiet_NaN(), x);
  }
  return fp8_to_f32(x, kE5M2);
}

}  // namespace mariana
