// Exhaustive checks of the bf16 / fp8 conversions in core/dtype.h against an independent reference:
// decoding every code via ldexp of its fields, and encoding a dense set of floats (every top-16-bit
// pattern with tie and near-tie low bits) against a nearest-value search over the code table.
#include "core/dtype.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace mariana {
namespace {

// A binary float format described only by its field widths, for the reference computations.
struct Format {
  const char* name;
  int exp_bits;
  int man_bits;
  int bias;
  bool has_inf;      // IEEE-like: exponent all ones is inf/NaN (e5m2, bf16)
  bool saturates;    // out-of-range finite values and inf clamp to max (fp8)
  uint32_t (*encode)(float);
  float (*decode)(uint32_t);
};

uint32_t enc_bf16(float x) { return f32_to_bf16(x); }
float dec_bf16(uint32_t c) { return bf16_to_f32(static_cast<uint16_t>(c)); }
uint32_t enc_e4m3(float x) { return f32_to_e4m3(x); }
float dec_e4m3(uint32_t c) { return e4m3_to_f32(static_cast<uint8_t>(c)); }
uint32_t enc_e5m2(float x) { return f32_to_e5m2(x); }
float dec_e5m2(uint32_t c) { return e5m2_to_f32(static_cast<uint8_t>(c)); }

const Format kBF16{"bf16", 8, 7, 127, true, false, enc_bf16, dec_bf16};
const Format kE4M3{"e4m3", 4, 3, 7, false, true, enc_e4m3, dec_e4m3};
const Format kE5M2{"e5m2", 5, 2, 15, true, true, enc_e5m2, dec_e5m2};

int total_bits(const Format& f) { return 1 + f.exp_bits + f.man_bits; }

enum class Kind { kFinite, kInf, kNaN };

Kind kind_of(const Format& f, uint32_t code) {
  uint32_t exp_max = (1u << f.exp_bits) - 1;
  uint32_t exp = (code >> f.man_bits) & exp_max;
  uint32_t man = code & ((1u << f.man_bits) - 1);
  if (f.has_inf) {
    if (exp == exp_max) return man == 0 ? Kind::kInf : Kind::kNaN;
  } else if (exp == exp_max && man == (1u << f.man_bits) - 1) {
    return Kind::kNaN;  // e4m3fn: only S.1111.111 is NaN
  }
  return Kind::kFinite;
}

// The value of a finite code from its fields: (-1)^s * 2^(e - bias) * (1 + m/2^M), or for e == 0
// (-1)^s * 2^(1 - bias) * m/2^M. Computed in double with ldexp, independently of the bit tricks.
double reference_value(const Format& f, uint32_t code) {
  int n = total_bits(f);
  int sign = (code >> (n - 1)) & 1;
  int exp = static_cast<int>((code >> f.man_bits) & ((1u << f.exp_bits) - 1));
  int man = static_cast<int>(code & ((1u << f.man_bits) - 1));
  double mag = exp == 0 ? std::ldexp(static_cast<double>(man), 1 - f.bias - f.man_bits)
                        : std::ldexp(static_cast<double>((1 << f.man_bits) + man), exp - f.bias - f.man_bits);
  return sign ? -mag : mag;
}

void check_decode_all(const Format& f) {
  uint32_t ncodes = 1u << total_bits(f);
  int failures = 0;
  for (uint32_t c = 0; c < ncodes && failures < 10; ++c) {
    float got = f.decode(c);
    bool negative = (c >> (total_bits(f) - 1)) & 1;
    switch (kind_of(f, c)) {
      case Kind::kNaN:
        if (!std::isnan(got)) { ADD_FAILURE() << f.name << " code " << c << " should be NaN, got " << got; ++failures; }
        break;
      case Kind::kInf:
        if (!std::isinf(got) || std::signbit(got) != negative) {
          ADD_FAILURE() << f.name << " code " << c << " should be " << (negative ? "-" : "+") << "inf, got " << got;
          ++failures;
        }
        break;
      case Kind::kFinite: {
        double want = reference_value(f, c);
        // Bitwise: also checks the sign of zero.
        if (std::bit_cast<uint32_t>(got) != std::bit_cast<uint32_t>(static_cast<float>(want)) ||
            static_cast<double>(got) != want) {
          ADD_FAILURE() << f.name << " code " << c << " decodes to " << got << ", want " << want;
          ++failures;
        }
        break;
      }
    }
  }
}

// Round trip: every finite code re-encodes to itself; NaN codes go to the canonical NaN; inf codes
// go to inf (bf16) or saturate to max (e5m2).
void check_reencode_all(const Format& f, uint32_t canonical_nan, uint32_t max_mag_code) {
  uint32_t ncodes = 1u << total_bits(f);
  uint32_t sign_bit = 1u << (total_bits(f) - 1);
  int failures = 0;
  for (uint32_t c = 0; c < ncodes && failures < 10; ++c) {
    uint32_t want = c;
    Kind k = kind_of(f, c);
    if (k == Kind::kNaN) want = canonical_nan;
    if (k == Kind::kInf && f.saturates) want = (c & sign_bit) | max_mag_code;
    uint32_t got = f.encode(f.decode(c));
    if (got != want) {
      ADD_FAILURE() << f.name << " code " << c << " re-encodes to " << got << ", want " << want;
      ++failures;
    }
  }
}

TEST(DType, Bf16DecodesEveryCode) { check_decode_all(kBF16); }
TEST(DType, E4M3DecodesEveryCode) { check_decode_all(kE4M3); }
TEST(DType, E5M2DecodesEveryCode) { check_decode_all(kE5M2); }

TEST(DType, Bf16ReencodesEveryCode) { check_reencode_all(kBF16, 0x7fc0, 0x7f7f); }
TEST(DType, E4M3ReencodesEveryCode) { check_reencode_all(kE4M3, 0x7f, 0x7e); }
TEST(DType, E5M2ReencodesEveryCode) { check_reencode_all(kE5M2, 0x7e, 0x7b); }

// Reference encoder: the nearest value in the sorted table of non-negative finite codes, ties to
// the even code (even mantissa); beyond the table, saturate (fp8) or round to inf per IEEE (bf16,
// where inf acts as the next code 2^128 — its mantissa field 0 is even, so a tie at the midpoint
// between max and 2^128 goes to inf).
struct ReferenceEncoder {
  const Format& f;
  std::vector<std::pair<double, uint32_t>> table;  // (value, code), ascending, non-negative
  uint32_t max_code = 0;
  double max_value = 0;

  explicit ReferenceEncoder(const Format& fmt) : f(fmt) {
    uint32_t sign_bit = 1u << (total_bits(f) - 1);
    for (uint32_t c = 0; c < sign_bit; ++c) {
      if (kind_of(f, c) == Kind::kFinite) table.emplace_back(reference_value(f, c), c);
    }
    std::sort(table.begin(), table.end());
    max_value = table.back().first;
    max_code = table.back().second;
    if (!f.saturates) table.emplace_back(std::ldexp(1.0, (1 << (f.exp_bits - 1))), sign_bit - (1u << f.man_bits));
  }

  uint32_t encode(float x, uint32_t canonical_nan) const {
    if (std::isnan(x)) return canonical_nan;
    uint32_t sign = std::signbit(x) ? (1u << (total_bits(f) - 1)) : 0;
    double a = std::fabs(static_cast<double>(x));
    if (f.saturates && a >= max_value) return sign | max_code;
    if (std::isinf(a)) return sign | table.back().second;  // bf16 inf
    auto hi = std::lower_bound(table.begin(), table.end(), std::make_pair(a, 0u),
                               [](const auto& l, const auto& r) { return l.first < r.first; });
    if (hi == table.end()) return sign | table.back().second;
    if (hi->first == a || hi == table.begin()) return sign | hi->second;
    auto lo = hi - 1;
    double dlo = a - lo->first, dhi = hi->first - a;  // exact in double: 24-bit float vs short codes
    if (dlo < dhi) return sign | lo->second;
    if (dhi < dlo) return sign | hi->second;
    return sign | ((lo->second & 1u) == 0 ? lo->second : hi->second);
  }
};

// Every float whose top 16 bits take all 65536 values, with low 16 bits in {0, 1, half-1, half,
// half+1, max}: exact bf16 values, ties and near-ties for bf16, and a spread of values between fp8
// codes (ties for fp8 happen at low bits 0 and are in the set).
std::vector<float> dense_floats() {
  const uint32_t lows[] = {0x0000, 0x0001, 0x7fff, 0x8000, 0x8001, 0xffff};
  std::vector<float> out;
  out.reserve(65536 * 6);
  for (uint32_t top = 0; top < 65536; ++top) {
    for (uint32_t low : lows) out.push_back(std::bit_cast<float>((top << 16) | low));
  }
  return out;
}

void check_encode_dense(const Format& f, uint32_t canonical_nan) {
  ReferenceEncoder ref(f);
  int failures = 0;
  for (float x : dense_floats()) {
    uint32_t want = ref.encode(x, canonical_nan);
    uint32_t got = f.encode(x);
    if (got != want) {
      ADD_FAILURE() << f.name << " encode(" << x << " = 0x" << std::hex << std::bit_cast<uint32_t>(x)
                    << ") = 0x" << got << ", want 0x" << want << std::dec;
      if (++failures >= 10) return;
    }
  }
}

TEST(DType, Bf16EncodesDenseFloatsLikeReference) { check_encode_dense(kBF16, 0x7fc0); }
TEST(DType, E4M3EncodesDenseFloatsLikeReference) { check_encode_dense(kE4M3, 0x7f); }
TEST(DType, E5M2EncodesDenseFloatsLikeReference) { check_encode_dense(kE5M2, 0x7e); }

// fp8 ties land exactly on midpoints between codes, which the dense set only covers where the
// midpoint's low 16 bits are 0; check every midpoint (and its float neighbours) explicitly.
void check_encode_midpoints(const Format& f, uint32_t canonical_nan) {
  ReferenceEncoder ref(f);
  int failures = 0;
  for (size_t i = 0; i + 1 < ref.table.size(); ++i) {
    float mid = static_cast<float>((ref.table[i].first + ref.table[i + 1].first) / 2);
    for (float x : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e30f)}) {
      for (float s : {x, -x}) {
        uint32_t want = ref.encode(s, canonical_nan), got = f.encode(s);
        if (got != want) {
          ADD_FAILURE() << f.name << " encode(" << s << ") = " << got << ", want " << want;
          if (++failures >= 10) return;
        }
      }
    }
  }
}

TEST(DType, E4M3RoundsEveryMidpointToEven) { check_encode_midpoints(kE4M3, 0x7f); }
TEST(DType, E5M2RoundsEveryMidpointToEven) { check_encode_midpoints(kE5M2, 0x7e); }

TEST(DType, SpotValues) {
  // A few hand-checked values, so a shared mistake in reference and implementation still shows.
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3f808000u)), 0x3f80);  // tie, even stays
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3f818000u)), 0x3f82);  // tie, odd rounds up
  EXPECT_EQ(f32_to_e4m3(1.0f), 0x38);
  EXPECT_EQ(f32_to_e4m3(448.0f), 0x7e);
  EXPECT_EQ(f32_to_e4m3(-448.0f), 0xfe);
  EXPECT_EQ(f32_to_e4m3(0.0087890625f), 0x04);    // 4.5 * 2^-9, tie between 4 and 5 -> 4
  EXPECT_EQ(f32_to_e4m3(std::ldexp(1.0f, -9)), 0x01);  // smallest subnormal
  EXPECT_EQ(f32_to_e4m3(std::ldexp(1.0f, -10)), 0x00);  // half of it: tie to even (0)
  EXPECT_EQ(f32_to_e4m3(std::ldexp(1.5f, -10)), 0x01);
  EXPECT_EQ(e4m3_to_f32(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(f32_to_e5m2(1.0f), 0x3c);
  EXPECT_EQ(f32_to_e5m2(57344.0f), 0x7b);
  EXPECT_EQ(e5m2_to_f32(0x01), std::ldexp(1.0f, -16));
  EXPECT_EQ(f32_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_e4m3(-0.0f), 0x80);
  EXPECT_EQ(f32_to_e5m2(-0.0f), 0x80);
}

TEST(DType, SaturationAndNaN) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (float big : {inf, 1e30f, 449.0f, 480.0f, 1000.0f}) {
    EXPECT_EQ(f32_to_e4m3(big), 0x7e) << big;
    EXPECT_EQ(f32_to_e4m3(-big), 0xfe) << big;
  }
  for (float big : {inf, 1e30f, 57345.0f, 61440.0f, 65536.0f}) {
    EXPECT_EQ(f32_to_e5m2(big), 0x7b) << big;
    EXPECT_EQ(f32_to_e5m2(-big), 0xfb) << big;
  }
  EXPECT_EQ(f32_to_e4m3(nan), 0x7f);
  EXPECT_EQ(f32_to_e4m3(-nan), 0x7f);
  EXPECT_EQ(f32_to_e5m2(nan), 0x7e);
  EXPECT_EQ(f32_to_bf16(nan), 0x7fc0);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::bit_cast<float>(0x7f800001u)))));  // signalling NaN
  EXPECT_EQ(f32_to_bf16(inf), 0x7f80);
  EXPECT_EQ(f32_to_bf16(-inf), 0xff80);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7f80);  // rounds past max bf16 to inf
  EXPECT_TRUE(std::isnan(e4m3_to_f32(0xff)));
  EXPECT_TRUE(std::isnan(e5m2_to_f32(0xfd)));
  EXPECT_EQ(e5m2_to_f32(0xfc), -inf);
}

TEST(DType, NamesAndSizes) {
  const DType all[] = {DType::kF32, DType::kF64, DType::kF16, DType::kBF16, DType::kF8E4M3, DType::kF8E5M2,
                       DType::kI64, DType::kI32, DType::kI16, DType::kI8,   DType::kU8,     DType::kBool};
  const size_t sizes[] = {4, 8, 2, 2, 1, 1, 8, 4, 2, 1, 1, 1};
  const char* names[] = {"F32", "F64", "F16", "BF16", "F8_E4M3", "F8_E5M2", "I64", "I32", "I16", "I8", "U8", "BOOL"};
  for (size_t i = 0; i < std::size(all); ++i) {
    EXPECT_EQ(dtype_size(all[i]), sizes[i]) << names[i];
    EXPECT_STREQ(dtype_name(all[i]), names[i]);
    Result<DType> back = dtype_from_name(names[i]);
    ASSERT_TRUE(back.ok()) << names[i];
    EXPECT_EQ(*back, all[i]);
  }
  Result<DType> bad = dtype_from_name("F128");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("F128"), std::string::npos);
}

}  // namespace
}  // namespace mariana
